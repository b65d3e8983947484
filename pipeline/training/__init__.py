"""Training: MNIST on disk (data), the models, how and where to train (hardware), tensors,
the loop (train), one initialisation stepped (attempt, graphs) and picked (restarts, health).
Imports only pipeline.config beside itself: never pipeline.analysis, never a tracker."""
