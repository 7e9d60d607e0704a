"""Training speed of the model chain against a single LightGBM, at several data sizes.

    python bench/train.py [--sizes 50000,200000,800000] [--seed 0] [--variant NAME=OVERRIDE,...] [override ...]

For each size (train rows; the generator writes rows_per_hour = size / 96 over the default windows, so
valid and holdout are a quarter of it each) the data is generated once under ``data/bench/`` (through
the data option's own generation), loaded and featurised once, then every model is fitted on the same
matrices: the single LightGBM of ``bench/quality.py`` on log1p(y) and each chain variant (``--variant``,
repeatable; default: the configured chain). ``--sizes default`` uses the default data option as it is.
Prints wall seconds of the fit, train rows/s, peak memory of the process tree (client + any worker
processes, sampled by psutil), holdout RMSLE and the fraction of the achievable gain
((RMSLE_zero - RMSLE) / (RMSLE_zero - RMSLE_oracle)); then the chain's seconds per stage
(``LTVModel.fit_times_``). Run by hand (``make bench-train``), not in tests.

``--clusters sync,local`` (default) fits every model twice: ``sync``, the matrices in this process (the
chain's independent fits on threads); ``local``, a LocalCluster of ``cluster.n_workers`` one-thread
workers (default one per core) that train every booster reading the train blocks, each on its share
(``train.distributed=true``; the single LightGBM too). Each row's "x single" is against the single
LightGBM of its own cluster kind.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # appended: a PYTHONPATH checkout (e.g. an older commit) wins

import psutil  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from proctree import PeakMemory  # noqa: E402  (bench/ is the script's folder)
from quality import gain, single_lgbm  # noqa: E402

from ltv import cluster  # noqa: E402
from ltv.config import CONFIG_DIR  # noqa: E402
from ltv.models import LabelledRows  # noqa: E402
from ltv.tasks import evaluation  # noqa: E402
from ltv.tasks.data import load_blocks  # noqa: E402
from ltv.tasks.train import build_model  # noqa: E402

TRAIN_HOURS = 96  # the default train window: Oct 1-4


def config(size: str, seed: int, overrides: list[str]):
    extra = []
    if size != "default":
        rows_per_hour = max(int(size) // TRAIN_HOURS, 1)
        extra = [
            f"data.root={ROOT}/data/bench/train_{size}_s{seed}",
            f"data.generate.rows_per_hour={rows_per_hour}",
            "data.generate.test_hours=1",
            f"data.generate.seed={seed}",
        ]
    elif seed:
        extra = [f"data.root={ROOT}/data/synthetic_s{seed}", f"data.generate.seed={seed}"]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[*extra, *overrides])


def measure(name, fit, predict, X_h, lab_h, n_train, zero, best) -> dict:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model = fit()
        seconds = time.perf_counter() - t0
    rmsle = evaluation.split_metrics(lab_h, predict(model, X_h))["rmsle"]
    row = {
        "fit_s": seconds,
        "rows_s": n_train / seconds,
        "peak_mb": mem.peak,
        "rmsle": rmsle,
        "gain": gain(rmsle, zero, best),
    }
    logging.getLogger("bench").info("%s: %s", name, row)
    return row | {"stages": getattr(model, "fit_times_", {})}


def _splits(base, kind: str, engine):
    """(X, labels, time) of train, valid and holdout as the training task loads them (``load_blocks``);
    ``local``: the train blocks bound to the cluster, whose workers train the boosters that read them."""
    splits = load_blocks(base, engine).splits
    (train, _), (valid, _), (holdout, ids_h) = (splits[s] for s in ("train", "valid", "holdout"))
    X = train.X.on(engine.client) if kind == "local" else train.X
    return (
        (X, train.labels, train.time),
        (valid.X, valid.labels, valid.time),
        (holdout.X, holdout.labels, ids_h),
    )


def bench_size(
    size: str, seed: int, variants: dict[str, list[str]], overrides: list[str], single: bool, kind: str
) -> dict:
    extra = [f"cluster={kind}"] + (["train.distributed=true"] if kind == "local" else [])
    base = config(size, seed, [*overrides, *extra])
    with cluster.connect(base.cluster) as engine:
        (X, lab, t), (X_v, lab_v, t_v), (X_h, lab_h, ids_h) = _splits(base, kind, engine)
        n_train = len(X)
        y_h = lab_h["iap_revenue_d7"].to_numpy()
        zero = evaluation.split_metrics(lab_h, np.zeros(len(y_h)))["rmsle"]
        oracle = evaluation.load_oracle(base.data.get("oracle_root"), "train", ids_h)
        best = (
            None
            if oracle is None
            else evaluation.split_metrics(lab_h, evaluation.oracle_prediction(oracle, "rmsle"))["rmsle"]
        )
        y_v = lab_v["iap_revenue_d7"].to_numpy()
        rows = {}
        if single:
            fit_single = lambda: single_lgbm(X, lab["iap_revenue_d7"].to_numpy(), X_v, y_v, base.seed)  # noqa: E731
            rows["single LightGBM"] = measure(
                "single LightGBM", fit_single, lambda f, Z: f(Z), X_h, lab_h, n_train, zero, best
            )
        for name, more in variants.items():
            cfg = config(size, seed, [*overrides, *extra, *more])
            rows[name] = measure(
                name, lambda cfg=cfg: build_model(cfg).fit(LabelledRows(X, lab, t), LabelledRows(X_v, lab_v, t_v)),
                lambda m, Z: m.predict(Z), X_h, lab_h, n_train, zero, best,
            )  # fmt: skip
    return {"n_train": n_train, "n_features": len(X.columns), "cluster": kind, "rows": rows}


def print_tables(results: dict[str, dict]) -> None:
    print(
        f"\n{'size':>9} {'cluster':<8}{'model':<28}{'fit s':>9}{'rows/s':>10}{'x single':>9}{'peak MB':>9}{'RMSLE':>9}{'gain':>7}"
    )
    for res in results.values():
        single = res["rows"].get("single LightGBM", {}).get("rows_s", float("nan"))
        for name, r in res["rows"].items():
            print(
                f"{res['n_train']:>9,} {res['cluster']:<8}{name:<28}{r['fit_s']:>9.1f}{r['rows_s']:>10,.0f}{r['rows_s'] / single:>9.2f}"
                f"{r['peak_mb']:>9,.0f}{r['rmsle']:>9.4f}{r['gain']:>7.3f}"
            )
    for res in results.values():
        for name, r in res["rows"].items():
            if not r["stages"]:
                continue
            print(
                f"\nstages of '{name}' ({res['cluster']}) on {res['n_train']:,} train rows (s; nested stages are "
                "part of their parent)"
            )
            for stage, seconds in r["stages"].items():
                print(f"  {stage:<42}{seconds:>9.1f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,200000,800000", help="train rows per size, or 'default'")
    ap.add_argument("--seed", type=int, default=0, help="generator seed")
    ap.add_argument(
        "--variant", action="append", default=[],
        help="NAME=OVERRIDE[,OVERRIDE...]: a chain variant (repeatable); default: the configured chain",
    )  # fmt: skip
    ap.add_argument("--skip-single", action="store_true", help="no single LightGBM row")
    ap.add_argument("--clusters", default="sync,local", help="sync and/or local (see the module doc)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every chain")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    variants = {"chain": []}
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, extra = spec.partition("=")
            variants[name] = [o for o in extra.split(",") if o]
    results = {}
    for size in args.sizes.split(","):  # the table so far after each size: a long run shows results early
        for kind in args.clusters.split(","):
            results[size, kind] = bench_size(
                size, args.seed, variants, args.overrides, not args.skip_single, kind
            )
            print_tables(results)
    print(f"\nmachine: {psutil.cpu_count()} cores, generator seed {args.seed}")


if __name__ == "__main__":
    main()
