"""Benchmark of feature extraction against reading the parquet (issue 3, item 5).

    python bench/features.py --rows 1000000

Writes contract data (``ltv.synthetic.generate`` when available, else a vectorised stand-in with
realistic nested cells), then measures per file, so memory follows the file, not the whole input:

  (a) read    pyarrow.parquet.read_table of a file (all columns)
  (b) extract FeatureBuilder.extract (stateless, from Arrow)
  (c) fitted  FeatureBuilder.transform (fit once on the first file)
  (d) naive   per-cell Python reductions of the nested columns (to_pylist + loops) on a subsample,
              extrapolated to rows/s

Timing is wall seconds and process CPU seconds (all threads; pyarrow reads with several threads, the
extraction runs mostly on one), so the ratios can be read on a busy machine too. Peak memory is the
process RSS high-water mark above the RSS before the step (Linux VmHWM, reset per step), i.e. what a
worker needs on top of its idle footprint.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltv import contract  # noqa: E402
from ltv.features import FeatureBuilder  # noqa: E402
from ltv.features.families import LIST_COLUMNS  # noqa: E402

NAN = math.nan

# ---------------------------------------------------------------- stand-in data (when no generator)

# per nested column: (mean entries per cell, null rate, key pool size, value kind)
_LIST_SHAPE = {
    "bundles_ins": (8, 0.3),
    "new_bundles": (3, 0.2),
    "user_bundles": (25, 0.1),
    "user_bundles_l28d": (6, 0.3),
}


def _offsets(rng, n, mean, null_rate, cap=None):
    counts = rng.poisson(mean, n) if cap is None else np.minimum(rng.poisson(mean, n), cap)
    mask = rng.random(n) < null_rate
    counts[mask] = 0  # a null cell spans no values (from_arrays reads a null offset as the next one)
    off = np.zeros(n + 1, np.int32)
    np.cumsum(counts, out=off[1:])
    return pa.array(off, mask=np.append(mask, False)), int(off[-1])


def _unique_keys(rng, off: pa.Array, pool: list[str]) -> pa.Array:
    """Distinct keys within each map (as in real exports): consecutive pool entries from a random start."""
    o = np.frombuffer(off.buffers()[1], np.int32)[: len(off)]  # raw offsets, also under the mask
    counts = np.diff(o)
    row = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(int(o[-1])) - np.repeat(o[:-1], counts)
    start = rng.integers(0, len(pool), len(counts))
    return pa.array(np.array(pool, dtype=object)[(start[row] + rank) % len(pool)], pa.string())


def _map_column(rng, n, name, t):
    kind = contract.KIND[name]
    mean = 2.5 if name in ("cpm", "ctr", "cpm_pct_rk", "ctr_pct_rk") else 12 if name == "hour_ratio" else 5
    null_rate = (
        0.96
        if name.startswith(("iap_", "num_buys", "whale", "last_buy", "rev_by", "ctr", "advert"))
        else 0.45
    )
    pool = ["b", "i", "r"] if name.startswith(("cpm", "ctr")) else [f"k{i:03d}" for i in range(300)]
    off, m = _offsets(rng, n, mean, null_rate, cap=len(pool))
    keys = _unique_keys(rng, off, pool)
    if name in contract.TIMESTAMP_MAP_COLUMNS:
        vals = 1_759_276_800 - rng.integers(0, 400, m) * 86400
    else:
        vals = np.round(rng.gamma(1.0, 10.0, m), 2)
    if kind == contract.MAP_OF_MAP:
        inner_off, mi = _offsets(rng, m, 2, 0.0)
        inner_keys = pa.array(
            np.array(["open", "buy", "view", "click"], dtype=object)[rng.integers(0, 4, mi)]
        )
        inner_vals = pa.array(1_759_276_800 - rng.integers(0, 400, mi) * 86400, pa.int64())
        items = pa.MapArray.from_arrays(inner_off, inner_keys, inner_vals)
    else:
        items = pa.array(vals if pa.types.is_floating(t.item_type) else np.round(vals)).cast(t.item_type)
    return pa.MapArray.from_arrays(off, keys, items).cast(t)


def stand_in_table(n: int, seed: int) -> pa.Table:
    """Contract rows (test split) with realistic nested cells, built with vectorised numpy/Arrow."""
    rng = np.random.default_rng(seed)
    cols = {}
    for name, kind, t in contract.FEATURE_SPEC:
        if kind in (contract.MAP, contract.MAP_OF_MAP):
            cols[name] = _map_column(rng, n, name, t)
        elif kind == contract.LIST:
            off, m = _offsets(rng, n, *_LIST_SHAPE[name])
            vals = np.array([f"com.app{i:05d}" for i in range(5000)], dtype=object)[rng.zipf(1.3, m) % 5000]
            cols[name] = pa.ListArray.from_arrays(off, pa.array(vals, pa.string()))
        elif kind == contract.STRING:
            pool = np.array([f"{name[:3]}{i}" for i in range(50)] + [None], dtype=object)
            cols[name] = pa.array(pool[rng.integers(0, len(pool), n)], pa.string())
        else:
            cols[name] = pa.array(np.round(rng.gamma(2.0, 3.0, n))).cast(t)
    cols["hour"] = pa.array([f"{h:02d}" for h in rng.integers(0, 24, n)])
    cols["weekday"] = pa.array(rng.integers(1, 8, n))
    cols["release_date"] = pa.array(
        np.array(["2023_october", "2021_may", None], dtype=object)[rng.integers(0, 3, n)]
    )
    cols["first_request_ts"] = pa.array(1_759_276_800.0 - rng.integers(0, 300, n) * 86400.0)
    cols["row_id"] = pa.array([f"r{seed}_{i}" for i in range(n)])
    return pa.table(cols)


def data_files(root: Path, sub: str = "contract") -> list[Path]:
    return sorted((root / sub / "train").rglob("*.parquet"))


def write_data(root: Path, rows: int, file_rows: int) -> tuple[list[Path], str]:
    """Hourly files of ``file_rows`` rows under ``root/contract/train/datetime=.../``: the project's
    generator when importable, else the stand-in. Returns the paths and which source wrote them."""
    hours = max(1, math.ceil(rows / file_rows))
    try:
        from ltv.synthetic import generate
    except ImportError:
        generate = None
    if generate is None:
        return write_stand_in(root, rows, file_rows), "bench stand-in (generator not importable)"
    generate(
        root / "contract",
        train_start="2025-10-01-00",
        train_hours=hours,
        test_hours=0,
        rows_per_hour=file_rows,
        files_per_hour=1,
        seed=0,
        overwrite=True,
    )
    return data_files(root), "ltv.synthetic.generate"


def write_stand_in(root: Path, rows: int, file_rows: int) -> list[Path]:
    for i in range(max(1, math.ceil(rows / file_rows))):
        d = root / "stand_in" / "train" / f"datetime=2025-10-01-{i % 24:02d}-00"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(stand_in_table(file_rows, seed=i), d / f"part-{i:05d}.parquet")
    return data_files(root, "stand_in")


# ---------------------------------------------------------------- naive reference


def _stats(vals: list[float], n_entries: int) -> dict[str, float]:
    if not vals:
        return {"count": n_entries, "sum": 0.0, "mean": NAN, "max": NAN, "min": NAN, "std": NAN}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return {
        "count": n_entries,
        "sum": sum(vals),
        "mean": mean,
        "max": max(vals),
        "min": min(vals),
        "std": std,
    }


def _hist(vals: list[float], k: int = 3) -> tuple[float, float, float]:
    w = sorted((v for v in vals if v and v > 0), reverse=True)
    s = sum(w)
    if s <= 0:
        return NAN, NAN, NAN
    return -sum(v / s * math.log(v / s) for v in w), w[0] / s, sum(w[:k]) / s


def naive_nested(table: pa.Table, now: float) -> dict[str, list]:
    """Per-cell Python version of the same nested reductions as the extraction (every map's stats,
    histogram entropy / shares, ad formats, recencies, map-of-map actions, lists and overlaps)."""
    out: dict[str, list] = {}
    adv = table["advertiser_bundle"].to_pylist()
    for name in contract.MAP_COLUMNS:
        cells = table[name].to_pylist()  # what a per-cell reader sees: lists of (key, value) tuples
        rows = []
        for i, cell in enumerate(cells):
            if cell is None:
                rows.append(None)
                continue
            vals = [v for _, v in cell if v is not None]
            r = _stats(vals, len(cell))
            r["entropy"], r["top1"], r["top3"] = _hist(vals)
            r.update({f: d.get(f, NAN) for d in [dict(cell)] for f in ("b", "i", "r")})
            r["adv"] = dict(cell).get(adv[i], 0.0)
            r["days_latest"] = (now - r["max"]) / 86400 if vals else NAN
            r["days_oldest"] = (now - r["min"]) / 86400 if vals else NAN
            rows.append(r)
        out[name] = rows
    for name in contract.MAP_OF_MAP_COLUMNS:
        rows = []
        for cell in table[name].to_pylist():
            if cell is None:
                rows.append(None)
                continue
            vals = [v for _, inner in cell for _, v in inner if v is not None]
            n_actions = sum(len(inner) for _, inner in cell)
            rows.append({"bundles": len(cell), **_stats(vals, n_actions)})
        out[name] = rows
    lists = {c: table[c].to_pylist() for c in LIST_COLUMNS}
    for c, cells in lists.items():
        out[c] = [None if x is None else (len(x), len(set(x)), adv[i] in x) for i, x in enumerate(cells)]
    out["overlap"] = [
        None if nb is None else sum(b in set(ub or ()) for b in nb)
        for nb, ub in zip(lists["new_bundles"], lists["user_bundles"], strict=True)
    ]
    return out


# ---------------------------------------------------------------- measurement


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class Step:
    """Wall seconds, process CPU seconds (all threads) and peak RSS above the RSS at ``__enter__``.

    Peak RSS is the kernel's high-water mark (VmHWM), reset at ``__enter__`` through
    /proc/self/clear_refs, so nothing samples during the step; where that is not available (not
    Linux), a background thread samples psutil RSS every 10 ms instead.
    """

    def __enter__(self):
        self._proc = psutil.Process()
        self._hwm = _reset_hwm()
        self.base = self.peak = self._proc.memory_info().rss
        if not self._hwm:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        if self._hwm:
            self.peak = _status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)
        self.mib = (self.peak - self.base) / 2**20


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _with_datetime(table: pa.Table, path: Path) -> pa.Table:
    """Add the hive partition value as the ``datetime`` column, as the dataset reader does."""
    part = [p.split("=", 1)[1] for p in path.parts if p.startswith("datetime=")]
    return table.append_column("datetime", pa.array([part[0]] * table.num_rows)) if part else table


def run(paths: list[Path], naive_rows: int) -> tuple[dict[str, list], int]:
    """Per step, one (rows, wall s, CPU s, peak RSS delta MiB) per file, streaming file by file."""
    fb = FeatureBuilder()
    res: dict[str, list] = {k: [] for k in ("read", "extract", "transform", "naive")}
    fb.extract(_with_datetime(pq.read_table(paths[0]), paths[0]).slice(0, 1000))  # warm-up: imports, caches
    for i, p in enumerate(paths):
        with Step() as m:
            table = pq.read_table(p)
        res["read"].append((table.num_rows, m.wall, m.cpu, m.mib))
        table = _with_datetime(table, p)
        with Step() as m:
            S = fb.extract(table)
        res["extract"].append((len(S), m.wall, m.cpu, m.mib))
        if i == 0:
            fb.fit(S)
        with Step() as m:
            X = fb.transform(S)
        res["transform"].append((len(X), m.wall, m.cpu, m.mib))
        del table, S, X
    sub = _with_datetime(pq.read_table(paths[0]), paths[0]).slice(0, naive_rows)
    with Step() as m:
        ref = naive_nested(sub, now=_request_time(sub))
    res["naive"].append((sub.num_rows, m.wall, m.cpu, m.mib))
    check_same(ref, fb.extract(sub))
    return res, len(fb.feature_names_)


def _request_time(table: pa.Table) -> float:
    hours = set(table["datetime"].to_pylist())
    if len(hours) != 1:
        raise ValueError("the naive reference assumes one request hour per file")
    return dt.datetime.strptime(hours.pop(), "%Y-%m-%d-%H-00").replace(tzinfo=dt.timezone.utc).timestamp()


def check_same(ref: dict, S) -> None:
    """The naive reference and the extraction agree (so (d) is the same work): raise if not."""
    pairs = {
        "bcat__std": ("bcat", "std"),
        "iap_revenue_usd_bundle__sum": ("iap_revenue_usd_bundle", "sum"),
        "country_hist__entropy": ("country_hist", "entropy"),
        "hour_ratio__top3_share": ("hour_ratio", "top3"),
        "cpm__b": ("cpm", "b"),
        "last_install_ts_bundle__days_latest": ("last_install_ts_bundle", "days_latest"),
        "iap_revenue_usd_bundle__advertiser": ("iap_revenue_usd_bundle", "adv"),
        "user_actions_bundles_action_count__actions": ("user_actions_bundles_action_count", "count"),
    }
    for col, (name, stat) in pairs.items():
        naive = np.array([NAN if r is None else r[stat] for r in ref[name]], np.float64)
        np.testing.assert_allclose(S[col].to_numpy(np.float64), naive, rtol=1e-5, atol=1e-4, err_msg=col)
    nunique = np.array([NAN if r is None else r[1] for r in ref["user_bundles"]], np.float64)
    np.testing.assert_array_equal(S["user_bundles__nunique"].to_numpy(np.float64), nunique)
    overlap = np.array([NAN if r is None else r for r in ref["overlap"]], np.float64)
    np.testing.assert_array_equal(S["new_bundles__in_user_bundles"].to_numpy(np.float64), overlap)


def report(res: dict, n_features: int, file_rows: int) -> str:
    labels = {
        "read": "(a) read parquet (pyarrow, all columns)",
        "extract": "(b) stateless extract",
        "transform": "(c) fitted transform",
        "naive": "(d) naive per-cell nested (subsample)",
    }
    cols = ["rows", "wall s", "rows/s", "CPU s", "rows/CPU-s", "median/file", "RSS +MiB"]
    lines = [f"{'step':41s} " + " ".join(f"{c:>11s}" for c in cols)]
    per_cpu_s = {}
    for k, label in labels.items():
        a = np.array(res[k], dtype=np.float64)
        rows, wall, cpu, mib = a[:, 0].sum(), a[:, 1].sum(), a[:, 2].sum(), a[:, 3].max()
        per_cpu_s[k] = float(np.median(a[:, 0] / a[:, 2]))  # robust to a noisy neighbour
        vals = [
            f"{rows:,.0f}",
            f"{wall:.2f}",
            f"{rows / wall:,.0f}",
            f"{cpu:.2f}",
            f"{rows / cpu:,.0f}",
            f"{per_cpu_s[k]:,.0f}",
            f"{mib:.0f}",
        ]
        lines.append(f"{label:41s} " + " ".join(f"{v:>11s}" for v in vals))
    tot = {k: sum(r[2] for r in res[k]) / sum(r[0] for r in res[k]) for k in labels}  # CPU s per row
    lines += [
        f"model matrix columns: {n_features}; files of {file_rows} rows, streamed (RSS is the max over files)",
        f"extract / read time (CPU): total {tot['extract'] / tot['read']:.2f}x, "
        f"median file {per_cpu_s['read'] / per_cpu_s['extract']:.2f}x",
        f"extract / naive speed (CPU): total {tot['naive'] / tot['extract']:.1f}x, "
        f"median file {per_cpu_s['extract'] / per_cpu_s['naive']:.1f}x",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--file-rows", type=int, default=100_000)
    ap.add_argument("--naive-rows", type=int, default=20_000)
    ap.add_argument("--data", type=Path, default=None, help="folder to write the data to / reuse from")
    ap.add_argument(
        "--stand-in", action="store_true", help="the bench's own stand-in data, not the generator"
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        sub = "stand_in" if args.stand_in else "contract"
        paths, source = data_files(root, sub), "existing files"
        if len(paths) * args.file_rows < args.rows:
            t0 = time.perf_counter()
            if args.stand_in:
                paths, source = write_stand_in(root, args.rows, args.file_rows), "bench stand-in"
            else:
                paths, source = write_data(root, args.rows, args.file_rows)
            print(f"wrote {len(paths)} files in {time.perf_counter() - t0:.1f}s under {root}", flush=True)
        print(f"data: {source}; {len(paths)} files of {args.file_rows} rows", flush=True)
        res, n_features = run(paths, args.naive_rows)
        print(report(res, n_features, args.file_rows))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
