"""Holdout quality of the model chain against baselines and the generator's oracle.

    python bench/quality.py [--data synthetic] [override ...]

Prints one table: RMSLE, fraction of the achievable RMSLE gain
((RMSLE_zero - RMSLE) / (RMSLE_zero - RMSLE_oracle)), RMSE, normalised Gini, buyer AUC and
total predicted / total actual, for: all zeros, the RMSLE-optimal constant, a single LightGBM on
log1p(y) over the same features, the chain (objective=rmsle, the default), the chain with
objective=revenue (p * E[y | buyer]) and the oracle. Features are extracted and fitted once and shared.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from ltv.config import CONFIG_DIR  # noqa: E402
from ltv.models import LabelledRows  # noqa: E402
from ltv.tasks import evaluation  # noqa: E402
from ltv.tasks.data import load_splits, split_frame  # noqa: E402
from ltv.tasks.train import build_model  # noqa: E402

KEYS = ("rmsle", "gain", "rmse", "gini", "buyer_auc", "total_ratio", "fit_s")


# the single-LightGBM baseline on log1p(y): its parameters and early-stopping patience (bench/train.py fits
# the same booster trained on a cluster's workers)
SINGLE_LGBM = dict(n_estimators=2000, learning_rate=0.05, num_leaves=63, min_child_samples=50, subsample=0.8,
                   subsample_freq=1, colsample_bytree=0.8, verbose=-1)  # fmt: skip
SINGLE_LGBM_PATIENCE = 100


def gain(rmsle: float, zero: float, best: float | None) -> float:
    """Fraction of the achievable RMSLE gain, (RMSLE_zero - RMSLE) / (RMSLE_zero - RMSLE_oracle): 0 for
    predicting all zeros (``zero``: that prediction's RMSLE), 1 for the oracle (``best``); NaN without one."""
    return (zero - rmsle) / (zero - best) if best is not None and zero > best else float("nan")


def single_lgbm(X, y, X_valid, y_valid, seed):
    """One LightGBM on log1p(y) through the project's fit path (X, X_valid: frames or Blocks), early-stopped
    on the valid rows; returns its dollar prediction (streamed over Blocks)."""
    from ltv.models.blocks import stream
    from ltv.models.lgbm_fit import fit_booster

    params = {"objective": "regression", **SINGLE_LGBM, "random_state": seed, "n_jobs": 2}
    model, rounds, _ = fit_booster(params, X, np.log1p(y), eval_set=(X_valid, np.log1p(y_valid)),
                                early_stopping_rounds=SINGLE_LGBM_PATIENCE)  # fmt: skip
    return lambda Z: np.expm1(np.clip(stream(lambda F: model.predict(F, num_iteration=rounds), Z), 0, None))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument(
        "--chains",
        type=lambda v: v.split(","),
        default=None,
        help="comma-separated chain rows to fit (e.g. 'chain'); baselines and oracle always run",
    )
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides applied to every chain")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        base = compose("config", overrides=[f"data={args.data}", *args.overrides])
        chains = {
            "chain": base,
            "chain revenue": compose(
                "config", overrides=[f"data={args.data}", "objective=revenue", *args.overrides]
            ),
        }
    if args.chains is not None:
        chains = {k: v for k, v in chains.items() if k in args.chains}
    builder = instantiate(base.features)
    _, loaded, _ = load_splits(base, builder.extract)  # Dask's default scheduler here (threads)
    splits = {name: split_frame(frame.compute()) for name, frame in loaded.items()}
    (S, lab, t, _), (S_v, lab_v, t_v, _), (S_h, lab_h, _, ids_h) = (
        splits[s] for s in ("train", "valid", "holdout")
    )
    builder.fit(S)
    X, X_v, X_h = builder.transform(S), builder.transform(S_v), builder.transform(S_h)
    y, y_h = lab["iap_revenue_d7"].to_numpy(), lab_h["iap_revenue_d7"].to_numpy()

    rows: dict[str, dict[str, float]] = {}
    rows["all zeros"] = evaluation.split_metrics(lab_h, np.zeros(len(y_h)))
    rows["constant"] = evaluation.split_metrics(lab_h, np.full(len(y_h), np.expm1(np.log1p(y).mean())))
    t0 = time.perf_counter()
    predict = single_lgbm(X, y, X_v, lab_v["iap_revenue_d7"].to_numpy(), base.seed)
    rows["single LightGBM"] = {
        **evaluation.split_metrics(lab_h, predict(X_h)),
        "fit_s": time.perf_counter() - t0,
    }
    for name, cfg in chains.items():
        t0 = time.perf_counter()
        model = build_model(cfg).fit(LabelledRows(X, lab, t), LabelledRows(X_v, lab_v, t_v))
        parts = model.predict_parts(X_h)
        p_buyer = parts["p_buyer"].to_numpy() if "p_buyer" in parts else None
        rows[name] = {
            **evaluation.split_metrics(lab_h, model.predict(X_h), p_buyer),
            "fit_s": time.perf_counter() - t0,
        }
    oracle = evaluation.load_oracle(base.data.get("oracle_root"), "train", ids_h)
    if oracle is not None:
        rows["oracle (rmsle)"] = evaluation.split_metrics(
            lab_h, evaluation.oracle_prediction(oracle, "rmsle"), oracle["p_buyer"].to_numpy()
        )
        rows["oracle (revenue)"] = evaluation.split_metrics(
            lab_h, evaluation.oracle_prediction(oracle, "revenue"), oracle["p_buyer"].to_numpy()
        )
    zero = rows["all zeros"]["rmsle"]
    best = rows.get("oracle (rmsle)", {}).get("rmsle")
    for m in rows.values():
        m["gain"] = gain(m["rmsle"], zero, best)
    print(
        f"\nholdout: {len(y_h)} rows, data={args.data}, features={len(X.columns)}, "
        f"mean revenue {y_h.mean():.3f}, buyers {lab_h['buyer_d7'].mean():.4f}"
    )
    print(evaluation.format_table(rows, KEYS))
    print(
        "\nrmsle gap to oracle, default chain:",
        f"{rows.get('chain', {}).get('rmsle', float('nan')) - (best or float('nan')):.4f}",
        "| normalised gini of the oracle:",
        f"{rows.get('oracle (rmsle)', {}).get('gini', float('nan')):.4f}",
    )


if __name__ == "__main__":
    main()
