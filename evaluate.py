"""Print and log RMSLE/RMSE/MAE/R2 + LTV metrics of the registered pipeline: `python evaluate.py`."""

import hydra
from omegaconf import DictConfig

import ltv.config  # noqa: F401  (registers the ${ltv_root:} resolver)
from ltv.interrupt import entry


@entry  # SIGTERM cleans up as Ctrl-C does: no temp file, the cluster closed, the MLflow run KILLED
@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from ltv.tasks.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
