"""The impure layer: the only code that touches paths, Hydra configs and MLflow."""
