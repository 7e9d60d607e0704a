"""The training task: data -> features -> model chain -> metrics/plots -> registered pipeline."""

from __future__ import annotations

import logging
import time

import mlflow
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from ltv import cluster
from ltv.contract import LABEL_COLUMNS, PARTITION_COLUMN, ROW_ID
from ltv.data.loader import load_split
from ltv.data.sense import check_fit_buyers
from ltv.models._progress import sweep_trial
from ltv.models.rows import LabelledRows
from ltv.pipeline import LTVPipeline, request_time
from ltv.tasks import data as data_task
from ltv.tasks import evaluation, frames_cache
from ltv.tracking import logging as tlog
from ltv.tracking.datasets import log_split_input
from ltv.tracking.store import setup as setup_tracking
from ltv.tracking.sweep import start_job_run

log = logging.getLogger(__name__)
META = [ROW_ID, PARTITION_COLUMN, *LABEL_COLUMNS]


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
        ensemble=build(cfg.ensemble),
        whale=build(cfg.whale),
        sampling=build(sampling) if sampling is not None and sampling.get("_target_") else None,
        objective=cfg.objective,
        random_state=cfg.seed,
        **dict(cfg.get("train") or {}),  # concurrent_fits, progress_every_s (conf/train)
    )


def split_frame(frame: pd.DataFrame):
    """(stateless features, labels, request time, row ids) of a loaded split."""
    frame = frame.reset_index(drop=True)
    S = frame.drop(columns=[c for c in META if c in frame.columns])
    labels = frame[[c for c in LABEL_COLUMNS if c in frame.columns]].reset_index(drop=True)
    return S, labels, request_time(frame[PARTITION_COLUMN]), frame[ROW_ID].reset_index(drop=True)


def load_splits(cfg: DictConfig, extract, splits=("train", "valid", "holdout")):
    """(root, {split: dask frame persisted on the cluster}, {split: LoadReport}) of the labelled windows."""
    root = data_task.ensure_data(cfg.data)
    out, reports = {}, {}
    for split in splits:
        window = data_task.window(cfg.data, split)
        out[split], reports[split] = load_split(
            root, data_task.SUBSET[split], window, extract, seed=cfg.seed, labelled=True
        )
    return root, out, reports


def load_local_splits(cfg: DictConfig, extract):
    """:func:`load_splits` with each split computed here as (features, labels, time, row ids): the chain
    fits in this process, so the persisted partitions come here."""
    root, loaded, reports = load_splits(cfg, extract)
    return root, {name: split_frame(frame.compute()) for name, frame in loaded.items()}, reports


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
        builder = instantiate(cfg.features)
        # a sweep's trials that change neither data, features nor seed reuse the previous job's frames
        root, splits, reports = frames_cache.cached(cfg, lambda: load_local_splits(cfg, builder.extract))
        for split, report in reports.items():
            mlflow.log_metrics(report.as_metrics(f"data.{split}"))
            digest = data_task.fingerprint(report.files, root)
            log_split_input(split, root, data_task.window(cfg.data, split), report, digest)
        mlflow.set_tag("data_root", str(root))
        mlflow.set_tag(
            "data_fingerprint", data_task.fingerprint([p for r in reports.values() for p in r.files], root)
        )
        mlflow.log_metric("time.load_s", time.perf_counter() - t0)

        pipeline = LTVPipeline(builder, build_model(cfg))
        (S, labels, t_train, _), (S_v, labels_v, t_valid, _) = splits["train"], splits["valid"]
        windows = [data_task.window(cfg.data, split) for split in ("train", "valid")]
        check_fit_buyers(labels, labels_v, *windows)  # a clear error, not one from deep inside LightGBM
        t1 = time.perf_counter()
        with sweep_trial():  # in an Optuna sweep: boosters report to the trial; its pruner may stop it
            pipeline.fit(LabelledRows(S, labels, t_train), LabelledRows(S_v, labels_v, t_valid))
        mlflow.log_metric("time.fit_s", time.perf_counter() - t1)
        mlflow.log_metrics(
            {f"time.fit.{k}_s": v for k, v in getattr(pipeline.model, "fit_times_", {}).items()}
        )
        tlog.log_json(pipeline.feature_names_, "features/feature_names.json")
        _log_fitted(pipeline)

        results = {}
        for split in ("valid", "holdout"):
            results.update(_evaluate(cfg, pipeline, split, *splits[split]))
        print(evaluation.format_table(results))
        if cfg.tracking.get("log_model", True):
            from ltv.tracking.pyfunc import log_pipeline

            info = log_pipeline(
                pipeline,
                registered_model_name=cfg.tracking.registered_model,
                input_example=_input_example(root),
            )
            log.info("registered %s version %s", cfg.tracking.registered_model, info.registered_model_version)
            print(f"model: models:/{cfg.tracking.registered_model}/{info.registered_model_version}")
        mlflow.log_metric("time.total_s", time.perf_counter() - t0)
        print(f"run: {run.info.run_id} (experiment {cfg.tracking.experiment}, store {cfg.tracking.uri})")
        return _optimized_metric(results, cfg.get("optimized_metric", "valid.rmsle"))


def _optimized_metric(results: dict[str, dict[str, float]], name: str) -> float:
    """The value a sweep optimises, named 'split.metric' (e.g. 'valid.rmsle'); never the holdout."""
    split, _, metric = str(name).partition(".")
    if split == "holdout" or split not in results or metric not in results[split]:
        raise ValueError(
            f"optimized_metric={name!r}: expected 'valid.<metric>' with metric one of {sorted(results['valid'])}"
        )
    return float(results[split][metric])


def _evaluate(cfg, pipeline, split, S, labels, _time, row_ids) -> dict[str, dict[str, float]]:
    pred, p_buyer = evaluation.predict_with_buyer(pipeline, S)
    res = {split: evaluation.split_metrics(labels, pred, p_buyer)}
    mlflow.log_metrics({f"{split}.{k}": v for k, v in res[split].items()})
    oracle = evaluation.load_oracle(cfg.data.get("oracle_root"), "train", row_ids)
    oracle_pred = None
    if oracle is not None:
        oracle_pred = evaluation.oracle_prediction(oracle, pipeline.model.objective)
        res[f"{split}_oracle"] = evaluation.split_metrics(labels, oracle_pred, oracle["p_buyer"].to_numpy())
        mlflow.log_metrics({f"{split}.oracle.{k}": v for k, v in res[f"{split}_oracle"].items()})
    if cfg.tracking.get("log_plots", True):
        for name, fig in evaluation.split_figures(labels, pred, p_buyer, oracle_pred).items():
            tlog.log_figure(fig, f"plots/{split}/{name}")
        if split == "valid":
            _log_importance(pipeline)
    return res


def _log_fitted(pipeline) -> None:
    fitted = getattr(pipeline.model, "fitted_params_", {}) or {}
    gate = fitted.get("gate", fitted)
    tlog.log_json(fitted.get("buyer_threshold", gate), "buyer_threshold.json")
    tlog.log_json(gate, "buyer_gating.json")
    tlog.log_json(fitted, "fitted_params.json")
    flat = {f"fitted.{k}": float(v) for k, v in _flat_numbers(fitted).items()}
    if flat:
        mlflow.log_metrics(flat)


def _flat_numbers(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_numbers(v, name + "."))
        elif (
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and np.isfinite(v)
        ):
            out[name] = v
    return out


def _log_importance(pipeline) -> None:
    imp = getattr(pipeline.model, "feature_importance_", None)
    if imp is None:
        clf = getattr(pipeline.model, "classifier_", None) or getattr(pipeline.model, "classifier", None)
        imp = getattr(clf, "feature_importance_", None)
    if imp is None:
        return
    imp = imp if isinstance(imp, pd.Series) else pd.Series(imp)
    from ltv import plots

    tlog.log_figure(plots.importance_plot(imp), "plots/feature_importance.png")
    tlog.log_frame(imp.rename("importance").rename_axis("feature").reset_index(), "features/importance.csv")


def _input_example(root):
    try:
        from ltv.serving.signature import input_example

        return input_example(2)
    except Exception:  # noqa: BLE001 - an example is a nicety; never fail a run on it
        log.warning("no input example for the logged model", exc_info=True)
        return None
