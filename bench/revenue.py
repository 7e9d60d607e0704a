"""Which expected-revenue estimand, and which predictive distribution, for objective=revenue.

    python bench/revenue.py [--rows-per-hour 2000] [--seeds 0 1] [--tails normal heavy] [override ...]

Per data set (generator seed x tail: ``normal`` is the default generator, ``heavy`` sets conf/data/heavy_tail's
whale_logit / whale_sigma), one chain with objective=revenue and regressor.retransform=mixture is fitted on the
train window (96 hours x rows-per-hour); every estimand below is computed from its parts on the holdout window
(24 hours) and compared with the generator's exact E[y | x] (the oracle):

- variance: the log-normal retransform p pi (exp(m / pi + s2 / 2) - 1) (the default before mixture);
- smearing: one total-matching factor from the valid buyers, p (exp(m) S - 1);
- mixture K=c (valid): the residual mixture with c components, fitted on the valid spenders' residuals;
- empirical (valid): the mean of exp(s z) over the valid spenders' standardised residuals;
- mixture (train OOF): the library's mixture (train spenders' out-of-fold residuals, regressor.mixture_components);
- mixture + level (default): that, times the level matching the dollar total of the train buyers (out of fold)
  and the held-out buyers: the library's objective=revenue prediction;
- ... + total / + bins: a final calibration of dollars on the valid window, one factor / by 5 predicted-revenue
  bins shrunk to the total factor by the bin's buyer count (credibility 100 buyers);
- tweedie (all rows), p x gamma (spenders): dollar-scale LightGBM objectives.

Columns: total = sum(pred) / sum(oracle E[y|x]); rmse and gini against the outcome; worst_dec = the predicted
decile whose sum(pred) / sum(oracle) is farthest from 1. A second table compares the spenders' conditional
distribution (pinball loss of log1p revenue at four levels, for held-out spenders): log-normal, mixture and
LightGBM quantile boosters; a third, the zero-inflated distribution of every holdout row against the oracle's.
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

from ltv import distribution_metrics as dm  # noqa: E402
from ltv import metrics  # noqa: E402
from ltv.config import CONFIG_DIR  # noqa: E402
from ltv.models import LabelledRows  # noqa: E402
from ltv.models.distribution import ResidualMixture, exceedance_name, quantile_name, spend_mean  # noqa: E402
from ltv.models.lgbm_fit import fit_booster  # noqa: E402
from ltv.models.regressor import smearing_factor  # noqa: E402
from ltv.synthetic import labels as oracle_dist  # noqa: E402
from ltv.tasks import evaluation  # noqa: E402
from ltv.tasks.data import load_splits, split_frame  # noqa: E402
from ltv.tasks.train import build_model  # noqa: E402

LEVELS = (0.1, 0.5, 0.9, 0.99)  # spenders' conditional quantiles compared in the second table
CREDIBILITY = 100.0  # buyers a calibration bin needs to weigh its own ratio as much as the total's
DOLLAR_BOOSTER = dict(n_estimators=1000, learning_rate=0.05, num_leaves=15, min_child_samples=20, subsample=0.8,
                      subsample_freq=1, colsample_bytree=0.5, reg_lambda=1.0, verbose=-1)  # fmt: skip


def total_factor(y, pred) -> float:
    return float(np.sum(y) / max(np.sum(pred), 1e-12))


def binned_calibration(pred_v, y_v, buyer_v, pred_h, n_bins: int = 5) -> np.ndarray:
    """Ratio of sums by bins of predicted dollars on the valid window, shrunk towards the total factor by
    the bin's buyer count (a bin of few buyers, or one whale, moves little); applied to ``pred_h``."""
    total = total_factor(y_v, pred_v)
    edges = np.quantile(pred_v, np.linspace(0, 1, n_bins + 1)[1:-1])
    bin_v, bin_h = np.searchsorted(edges, pred_v), np.searchsorted(edges, pred_h)
    factors = np.full(n_bins, total)
    for k in range(n_bins):
        rows = bin_v == k
        if rows.any() and pred_v[rows].sum() > 0:
            c = buyer_v[rows].sum() / (buyer_v[rows].sum() + CREDIBILITY)
            factors[k] = c * total_factor(y_v[rows], pred_v[rows]) + (1 - c) * total
    return pred_h * factors[bin_h]


def scores(y, oracle_e, pred) -> dict[str, float]:
    return {"total": float(pred.sum() / oracle_e.sum()), "rmse": metrics.rmse(y, pred),
            "gini": metrics.normalized_gini(y, pred),
            "worst_dec": dm.worst_decile(dm.decile_ratios(oracle_e, pred))}  # fmt: skip


def dollar_model(objective: str, X, y, X_v, y_v, seed: int):
    params = {"objective": objective, **DOLLAR_BOOSTER, "random_state": seed, "n_jobs": 2}
    model, rounds, _ = fit_booster(params, X, y, eval_set=(X_v, y_v), early_stopping_rounds=30)
    return lambda Z: np.clip(model.predict(Z, num_iteration=rounds), 0.0, None)


def standardised(reg, X, labels, log_d7):
    """(z, scale) of the spenders among buyer rows: z = (log1p y - m / pi) / s(x)."""
    pi = float(reg.spend_share_[0])
    y = labels["iap_revenue_d7"].to_numpy()
    spend = y > 0
    scale = np.sqrt(np.clip(reg.predict_variance(X)[:, 0], 1e-6, None))
    return (np.log1p(y[spend]) - log_d7[spend] / pi) / scale[spend], scale


def run_dataset(name: str, cfg, seed: int) -> tuple[dict, dict, dict]:
    builder = instantiate(cfg.features)
    _, loaded, _ = load_splits(cfg, builder.extract)
    splits = {s: split_frame(frame.compute()) for s, frame in loaded.items()}
    (S, lab, t, ids), (S_v, lab_v, t_v, _), (S_h, lab_h, _, ids_h) = (
        splits[s] for s in ("train", "valid", "holdout")
    )
    builder.fit(S)
    X, X_v, X_h = builder.transform(S), builder.transform(S_v), builder.transform(S_h)
    t0 = time.perf_counter()
    model = build_model(cfg).fit(LabelledRows(X, lab, t), LabelledRows(X_v, lab_v, t_v))
    logging.info("%s: chain fitted in %.0f s", name, time.perf_counter() - t0)
    reg = model.regressor_
    pi = float(reg.spend_share_[0])
    oracle = evaluation.load_oracle(cfg.data.oracle_root, "train", ids_h)
    y_h, y_v = lab_h["iap_revenue_d7"].to_numpy(), lab_v["iap_revenue_d7"].to_numpy()
    e_h = oracle["e_revenue"].to_numpy()
    parts_h, parts_v = model.predict_parts(X_h), model.predict_parts(X_v)

    def estimands(parts, Xs):
        p, m = parts["p_gated"].to_numpy(), parts["log_rev_d7"].to_numpy()
        s2 = np.clip(reg.predict_variance(Xs)[:, 0], 0.0, None)
        return p, m, np.sqrt(np.clip(s2, 1e-6, None)), s2

    buyers_v = lab_v["buyer_d7"].to_numpy() > 0
    z_v, _ = standardised(reg, X_v[buyers_v], lab_v[buyers_v], parts_v["log_rev_d7"].to_numpy()[buyers_v])
    smear = smearing_factor(np.log1p(y_v[buyers_v]), parts_v["log_rev_d7"].to_numpy()[buyers_v])
    preds = {}
    for tag, (parts, Xs) in {"h": (parts_h, X_h), "v": (parts_v, X_v)}.items():
        p, m, s, s2 = estimands(parts, Xs)
        out = {"variance": p * pi * np.clip(np.exp(m / pi + s2 / 2) - 1, 0, None),
               "smearing": p * np.clip(np.exp(m) * smear - 1, 0, None),
               "empirical (valid)": p * pi * np.clip(np.exp(m / pi) * np.exp(np.outer(s, z_v)).mean(1) - 1, 0, None),
               "mixture (train OOF)": p * pi * spend_mean(m / pi, s, reg.mixtures_[0]),
               "mixture + level (default)": parts["final"].to_numpy()}  # fmt: skip
        for k in (1, 2, 3):
            mix = ResidualMixture(k, seed).fit(z_v)
            out[f"mixture K={k} (valid)"] = p * pi * spend_mean(m / pi, s, mix)
        preds[tag] = out
    for base in ("variance", "mixture + level (default)"):
        pv, ph = preds["v"][base], preds["h"][base]
        preds["h"][f"{base} + total"] = ph * total_factor(y_v, pv)
        preds["h"][f"{base} + bins"] = binned_calibration(pv, y_v, lab_v["buyer_d7"].to_numpy(), ph)
    X_tr_spend = X[lab["iap_revenue_d7"].to_numpy() > 0]
    y_tr_spend = lab["iap_revenue_d7"].to_numpy()[lab["iap_revenue_d7"].to_numpy() > 0]
    spend_v = y_v > 0
    tweedie = dollar_model("tweedie", X, lab["iap_revenue_d7"].to_numpy(), X_v, y_v, seed)
    preds["h"]["tweedie (all rows)"] = tweedie(X_h)
    gamma = dollar_model("gamma", X_tr_spend, y_tr_spend, X_v[spend_v], y_v[spend_v], seed)
    preds["h"]["p x gamma (spenders)"] = parts_h["p_gated"].to_numpy() * pi * gamma(X_h)
    table = {k: scores(y_h, e_h, v) for k, v in preds["h"].items()}
    table["oracle E[y|x]"] = scores(y_h, e_h, e_h)
    # the level a model can learn from this train sample: its realized total over its oracle total
    e_train = evaluation.load_oracle(cfg.data.oracle_root, "train", ids)["e_revenue"].to_numpy()
    nan = float("nan")
    table["train sample: realized/oracle"] = {"total": float(lab["iap_revenue_d7"].sum() / e_train.sum()),
                                              "rmse": nan, "gini": nan, "worst_dec": nan}  # fmt: skip
    return (
        table,
        spender_quantiles(reg, model, X, lab, X_v, lab_v, X_h, lab_h, oracle, seed),
        holdout_distribution(model, parts_h, y_h, oracle),
    )


def spender_quantiles(reg, model, X, lab, X_v, lab_v, X_h, lab_h, oracle, seed) -> dict:
    """Pinball loss of held-out spenders' log1p revenue at LEVELS: log-normal, mixture, quantile boosters."""
    pi, y_h = float(reg.spend_share_[0]), lab_h["iap_revenue_d7"].to_numpy()
    spend_h = y_h > 0
    m = reg.predict_log(X_h)[:, 0] / pi
    s = np.sqrt(np.clip(reg.predict_variance(X_h)[:, 0], 1e-6, None))
    truth = np.log1p(y_h[spend_h])
    normal, mixture = ResidualMixture(1), reg.mixtures_[0]
    normal.weights_, normal.means_, normal.sigmas_ = (
        np.ones(1),
        np.zeros(1),
        np.ones(1),
    )  # N(0, 1): log-normal
    rows = {"log-normal": {}, "mixture (train OOF)": {}, "quantile boosters": {}, "oracle": {}}
    y_tr, y_v = lab["iap_revenue_d7"].to_numpy(), lab_v["iap_revenue_d7"].to_numpy()
    for a in LEVELS:
        rows["log-normal"][a] = m[spend_h] + s[spend_h] * normal.quantile(np.array([a]))[0]
        rows["mixture (train OOF)"][a] = m[spend_h] + s[spend_h] * mixture.quantile(np.array([a]))[0]
        params = {"objective": "quantile", "alpha": a, **DOLLAR_BOOSTER, "random_state": seed, "n_jobs": 2}
        booster, rounds, _ = fit_booster(
            params,
            X[y_tr > 0],
            np.log1p(y_tr[y_tr > 0]),
            eval_set=(X_v[y_v > 0], np.log1p(y_v[y_v > 0])),
            early_stopping_rounds=30,
        )
        rows["quantile boosters"][a] = booster.predict(X_h[spend_h], num_iteration=rounds)
        spenders = {k: oracle[k].to_numpy()[spend_h] for k in oracle_dist.DISTRIBUTION_COLUMNS}
        spenders["p_paid"] = np.ones(spend_h.sum())  # given a spender
        rows["oracle"][a] = np.log1p(oracle_dist.quantile(spenders, a))
    return {name: {a: dm.pinball(truth, q[a], a) for a in LEVELS} for name, q in rows.items()}


def holdout_distribution(model, parts_h, y_h, oracle) -> dict:
    """Pinball, coverage and mean P(y > t) over the observed share, model against oracle, on holdout rows."""
    reg = model.regressor_
    qs, ts = [float(a) for a in reg.quantiles], [float(t) for t in reg.thresholds]
    model_cols = {c: parts_h[c].to_numpy() for c in parts_h.columns}
    oracle_cols = {**{quantile_name(a): oracle_dist.quantile(oracle, a) for a in qs},
                   **{exceedance_name(t): oracle_dist.exceedance(oracle, t) for t in ts}}  # fmt: skip
    return {
        "model": dm.distribution_report(y_h, model_cols, qs, ts),
        "oracle": dm.distribution_report(y_h, oracle_cols, qs, ts),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-hour", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tails", nargs="+", default=["normal", "heavy"], choices=["normal", "heavy"])
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides of the chain")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ltv").setLevel(logging.WARNING)
    results = {}
    for tail in args.tails:
        for seed in args.seeds:
            name = f"{tail} seed {seed}"
            data = "synthetic" if tail == "normal" else "heavy_tail"
            overrides = [f"data={data}", f"data.root=${{paths.data_dir}}/bench_revenue/{tail}_s{seed}",
                         f"data.generate.seed={seed}", f"data.generate.rows_per_hour={args.rows_per_hour}",
                         "data.generate.test_hours=1", "objective=revenue", "cluster=sync",
                         *args.overrides]  # fmt: skip
            with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
                cfg = compose("config", overrides=overrides)
            results[name] = run_dataset(name, cfg, seed)
    print_tables(results, args.rows_per_hour)


def print_tables(results: dict, rows_per_hour: int) -> None:
    names = list(results)
    print(f"\n## expected revenue on holdout ({24 * rows_per_hour} rows; train {96 * rows_per_hour} rows)")
    print(
        "total = sum(pred) / sum(oracle E[y|x]); worst_dec = the predicted decile farthest from its oracle sum"
    )
    rows = list(next(iter(results.values()))[0])
    print(f"{'estimand':<34}" + "".join(f"{n:>44}" for n in names))
    print(f"{'':<34}" + "".join(f"{'total':>11}{'rmse':>11}{'gini':>11}{'worst_dec':>11}" for _ in names))
    for r in rows:
        cells = "".join("".join(f"{results[n][0][r][k]:>11.3f}" for k in ("total", "rmse", "gini", "worst_dec"))
                        for n in names)  # fmt: skip
        print(f"{r:<34}{cells}")
    print("\n## spenders' conditional distribution: pinball loss of log1p revenue (held-out spenders)")
    print(f"{'model':<24}" + "".join(f"{n + ' a=' + str(a):>22}" for n in names for a in LEVELS))
    for r in results[names[0]][1]:
        print(f"{r:<24}" + "".join(f"{results[n][1][r][a]:>22.4f}" for n in names for a in LEVELS))
    print("\n## zero-inflated distribution on every holdout row: model vs oracle")
    keys = list(results[names[0]][2]["model"])
    print(f"{'data':<20}{'who':<8}" + "".join(f"{k:>20}" for k in keys))
    for n in names:
        for who in ("model", "oracle"):
            print(f"{n:<20}{who:<8}" + "".join(f"{results[n][2][who][k]:>20.4f}" for k in keys))


if __name__ == "__main__":
    main()
