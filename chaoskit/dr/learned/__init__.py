"""Learned detection: signals sampled per service and window, and detectors
(IsolationForest, KMeans distance) trained on an experiment's own steady state."""
