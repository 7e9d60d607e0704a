"""The training task: data -> features -> model chain -> metrics/plots -> registered pipeline."""

from __future__ import annotations

import dataclasses
import logging
import time

import mlflow
from hydra.utils import instantiate
from omegaconf import DictConfig

from ltv import cluster
from ltv.data.sense import check_fit_buyers
from ltv.memory import release_freed_memory
from ltv.models.blocks import compile_for
from ltv.models.fitting import LabelledRows
from ltv.pipeline import LTVPipeline, prediction_and_buyer
from ltv.tasks import data as data_task
from ltv.tasks import evaluation, frames_cache
from ltv.tasks.pruning import sweep_trial
from ltv.tracking import logging as tlog
from ltv.tracking.fitted import log_fitted, log_importance
from ltv.tracking.store import setup as setup_tracking
from ltv.tracking.sweep import start_job_run

log = logging.getLogger(__name__)


_NOT_MODEL = ("distributed", "block_dir")  # conf/train keys of the task, not of LTVModel


def build_model(cfg: DictConfig):
    """The model chain from its config groups (each part gets its own parameters only, as plain dicts and
    lists: the pickled model must not need omegaconf)."""
    from ltv.models.chain import LTVModel

    def build(node):
        return instantiate(node, _convert_="all")

    sampling = cfg.get("sampling")
    return LTVModel(
        classifier=build(cfg.classifier),
        regressor=build(cfg.regressor),
        gate=build(cfg.gate),
        whale=build(cfg.whale),
        sampling=build(sampling) if sampling is not None and sampling.get("_target_") else None,
        objective=cfg.objective,
        random_state=cfg.seed,
        **{k: v for k, v in (cfg.get("train") or {}).items() if k not in _NOT_MODEL},  # conf/train
    )


def train(cfg: DictConfig) -> float:
    """Train the configured chain in one MLflow run; returns ``cfg.optimized_metric`` (what sweeps optimise)."""
    setup_tracking(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root)
    with (
        start_job_run(run_name=cfg.tracking.get("run_name"), tags={"ltv.task": "train"}) as run,
        cluster.connect(cfg.get("cluster")) as engine,
    ):
        t0 = time.perf_counter()
        tlog.log_config(cfg)
        mlflow.set_tag("git_commit", tlog.git_commit() or "unknown")
        cluster.tag_run(engine)
        # blocks on disk; a sweep's trials that change neither data, features nor seed reuse them
        root, splits, reports, builder, _ = frames_cache.cached(
            cfg, lambda: data_task.load_blocks(cfg, engine)
        )
        data_task.log_loaded(cfg, root, reports)
        mlflow.log_metric("time.load_s", time.perf_counter() - t0)

        pipeline = LTVPipeline(builder, build_model(cfg))
        (train_rows, _), (valid_rows, _) = splits["train"], splits["valid"]
        if distributed_training(cfg, engine):  # the boosters that read the train blocks train on the workers
            train_rows = dataclasses.replace(train_rows, X=train_rows.X.on(engine.client))
        windows = [data_task.window(cfg.data, split) for split in ("train", "valid")]
        check_fit_buyers(train_rows.labels, valid_rows.labels, *windows)  # not an error from inside LightGBM
        t1 = time.perf_counter()
        # in an Optuna sweep: boosters report to the trial; its pruner may stop it
        with cluster.stage("fit the chain"), sweep_trial() as on_round:
            pipeline.fit(train_rows, valid_rows, on_round=on_round)
        log_fitted(pipeline, time.perf_counter() - t1)
        release_freed_memory()  # the fit's Datasets and buffers, before the windows are scored

        results = {}
        for split in ("valid", "holdout"):
            t2 = time.perf_counter()
            with cluster.stage(f"evaluate {split}"):
                results.update(_evaluate(cfg, pipeline, split, *splits[split]))
            mlflow.log_metric(f"time.{split}_s", time.perf_counter() - t2)
        print(evaluation.format_table(results))
        if cfg.tracking.get("log_model", True):
            from ltv.tracking.pyfunc import log_pipeline

            info = log_pipeline(pipeline, registered_model_name=cfg.tracking.registered_model)
            log.info("registered %s version %s", cfg.tracking.registered_model, info.registered_model_version)
            print(f"model: models:/{cfg.tracking.registered_model}/{info.registered_model_version}")
        mlflow.log_metric("time.total_s", time.perf_counter() - t0)
        print(f"run: {run.info.run_id} (experiment {cfg.tracking.experiment}, store {cfg.tracking.uri})")
        return optimized_metric(results, cfg.get("optimized_metric", "valid.rmsle"))


def distributed_training(cfg: DictConfig, engine) -> bool:
    """``train.distributed``, checked against the cluster: a clear error without 2+ workers (the boosters
    that read every train row would otherwise train in this process, which the option says they must not)."""
    if not (cfg.get("train") or {}).get("distributed", False):
        return False
    if engine.client is None or engine.n_workers < 2:
        raise ValueError(
            f"train.distributed=true trains the boosters on 2+ workers, but cluster={engine.kind} "
            f"has {engine.n_workers} worker(s): use cluster=local with cluster.n_workers=2 or more (or "
            "cluster=remote), or set train.distributed=false"
        )
    return True


def optimized_metric(results: dict[str, dict[str, float]], name: str) -> float:
    """The value a sweep optimises, named 'split.metric' (e.g. 'valid.rmsle'); never the holdout."""
    split, _, metric = str(name).partition(".")
    if split == "holdout" or split not in results or metric not in results[split]:
        raise ValueError(
            f"optimized_metric={name!r}: expected 'valid.<metric>' with metric one of {sorted(results['valid'])}"
        )
    return float(results[split][metric])


def _evaluate(cfg, pipeline, split, rows: LabelledRows, row_ids) -> dict[str, dict[str, float]]:
    compile_for(rows.X, pipeline.model.boosters())  # a window of blocks: the compiled trees score it
    parts = evaluation.predict_parts(pipeline, rows.X)
    pred, p_buyer = prediction_and_buyer(parts)
    labels = rows.labels
    res = {split: evaluation.split_metrics(labels, pred, p_buyer)}
    mlflow.log_metrics({f"{split}.{k}": v for k, v in res[split].items()})
    oracle = evaluation.load_oracle(cfg.data.get("oracle_root"), "train", row_ids)
    oracle_pred = None
    if oracle is not None:
        oracle_pred = evaluation.oracle_prediction(oracle, pipeline.model.objective)
        res[f"{split}_oracle"] = evaluation.split_metrics(labels, oracle_pred, oracle["p_buyer"].to_numpy())
        mlflow.log_metrics({f"{split}.oracle.{k}": v for k, v in res[f"{split}_oracle"].items()})
    pit = pipeline.model.spend_pit(parts, labels["iap_revenue_d7"].to_numpy())
    parts = parts if pit is None else parts.assign(pit=pit)
    for who, m in evaluation.distribution_metrics(labels, parts, pred, oracle).items():
        mlflow.log_metrics({f"{split}.distribution.{who}.{k}": v for k, v in m.items()})
    if cfg.tracking.get("log_plots", True):
        figs = {**evaluation.split_figures(labels, pred, p_buyer, oracle_pred),
                **evaluation.distribution_figures(labels, parts, oracle)}  # fmt: skip
        for name, fig in figs.items():
            tlog.log_figure(fig, f"plots/{split}/{name}")
        if split == "valid":
            log_importance(pipeline)
    return res
