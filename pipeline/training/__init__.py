"""Training: MNIST on disk (data), the models, tensors and devices, the loop (train), one
initialisation stepped and checkpointed (attempt), picking a healthy one (restarts, health).
Imports only pipeline.config beside itself: never pipeline.analysis, never a tracker."""
