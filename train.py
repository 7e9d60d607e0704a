"""Train the LTV pipeline: `python train.py [overrides]`, `python train.py -m ...` for sweeps."""

import hydra
from omegaconf import DictConfig

import ltv.config  # noqa: F401  (registers the ${ltv_root:} resolver)
from ltv.interrupt import entry


@entry  # SIGTERM cleans up as Ctrl-C does: no temp file, the cluster closed, the MLflow run KILLED
@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from ltv.tasks.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
