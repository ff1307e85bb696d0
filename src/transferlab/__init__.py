"""transferlab: reproducible Transformer experiments with DVC stages, Hydra configs and MLflow."""

__version__ = "0.1.0"
