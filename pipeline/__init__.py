"""Pure ML, no MLflow: the parameters' one schema (config.py), training (training/) and the
analysis of finished runs (analysis/). tracking/ plugs MLflow into both."""
