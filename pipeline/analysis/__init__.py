"""Analysis of finished runs: the per-run report, the spread over seeds and the pick, the
PCA floors, the figures, a model's views and the study page. Pure: frames and models in.
Uses training's models, tensors and health thresholds, never its loop (train, attempt, restarts)."""
