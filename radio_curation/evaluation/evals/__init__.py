"""The evaluations ``evaluate.py`` runs, one class each, instantiated from ``configs/eval/<name>.yaml``."""
