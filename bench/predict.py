"""predict.py throughput and peak memory at two input sizes (at least 4x apart).

    python bench/predict.py [--rows 50000 --factor 4 --model-uri models:/ltv-pipeline@champion] [--stages]
                            [--tracking-uri sqlite:////path/to/mlruns/mlflow.db]
                            [--rows-per-hour 5000 --row-group-rows 0]   # large files: 200000 / 50000

Generates two contract test sets (N and factor*N rows) in a temp folder, runs `predict.py` on each in a
subprocess and reports rows/s (from predict.py's own timer) and the peak RSS of predict.py with its
scoring processes. Memory should not grow with the input: prediction streams batches of `data.batch_rows`. Needs a registered model (run
`python train.py` first); the tracking store is the project's.

``--stages`` also runs each stage of predict.py alone on the larger input (loader, features, the model's
first stage, the stacking head) and prints its CPU microseconds per row: their sum bounds what 2 cores
can score (2 / sum rows per microsecond).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_once(
    data_root: Path, out: Path, model_uri: str, batch_rows: int, tracking_uri: str | None = None
) -> tuple[float, float, float]:
    """(rows/s reported by predict.py, peak RSS in MB of predict.py and its scoring processes together,
    sampled every 20 ms, wall seconds)."""
    import psutil

    cmd = [
        sys.executable,
        str(ROOT / "predict.py"),
        f"data.root={data_root}",
        "data.generate=null",
        "data.oracle_root=null",
        f"output={out}",
        f"model_uri={model_uri}",
        f"data.batch_rows={batch_rows}",
    ]
    if tracking_uri:
        cmd.append(f"tracking.uri={tracking_uri}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:  # predict.py and its scoring processes together (parallel=processes)
            family = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in family))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(stderr[-3000:])
    m = re.search(r"\((\d+) rows, (\d+) rows/s\)", stdout)
    return (float(m.group(2)) if m else float("nan")), peak / 2**20, wall


def _regroup(folder: Path, rows: int) -> None:
    """Rewrite every parquet file under ``folder`` in row groups of ``rows`` rows (large real exports
    come in several row groups per file)."""
    import pyarrow.parquet as pq

    for path in folder.rglob("*.parquet"):
        pq.write_table(pq.ParquetFile(path).read(), path, row_group_size=rows, compression="snappy")


def _rss(process) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000, help="rows of the small input")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--model-uri", default="models:/ltv-pipeline@champion")
    ap.add_argument("--tracking-uri", default=None, help="store holding the model (default: the project's)")
    ap.add_argument("--rows-per-hour", type=int, default=5_000, help="rows of each hour's (one) file")
    ap.add_argument("--row-group-rows", type=int, default=0,
                    help="rewrite the test files in row groups of this many rows (0: as generated)")  # fmt: skip
    ap.add_argument("--stages", action="store_true", help="also time each stage alone (CPU us per row)")
    args = ap.parse_args(argv)
    from ltv.synthetic import generate

    rows_per_hour = args.rows_per_hour
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.rows, args.rows * args.factor):
            hours = max(1, n // rows_per_hour)
            root = Path(tmp) / f"d{n}"
            generate(root, train_hours=1, test_hours=hours, rows_per_hour=rows_per_hour, seed=1)
            if args.row_group_rows > 0:
                _regroup(root / "test", args.row_group_rows)
            rate, peak, wall = run_once(
                root, Path(tmp) / f"sub{n}.csv", args.model_uri, args.batch_rows, args.tracking_uri
            )
            results.append((hours * rows_per_hour, rate, peak, wall))
        if args.stages:  # on the larger input
            stage_table(root, args.model_uri, args.tracking_uri, args.batch_rows)
    print(f"\n{'rows':>10} {'rows/s':>10} {'peak RSS MB':>12} {'wall s':>8}   (batch_rows={args.batch_rows})")
    for n, rate, peak, wall in results:
        print(f"{n:>10} {rate:>10.0f} {peak:>12.0f} {wall:>8.1f}")
    (n0, _, p0, _), (n1, _, p1, _) = results
    print(f"input x{n1 / n0:.1f} -> peak memory x{p1 / p0:.2f}")


def stage_table(root: Path, model_uri: str, tracking_uri: str | None, batch_rows: int) -> None:
    """Where a row's time goes: each stage of predict.py run alone, one after another, in this process.

    CPU us/row is the budget that matters on 2 cores: 100k rows/s needs the stages to sum to <= 20.
    """
    import mlflow

    from ltv.data.loader import iter_tables
    from ltv.data.window import Window
    from ltv.memory import keep_freed_memory
    from ltv.tasks.predict import coalesce
    from ltv.tracking.pyfunc import load_pipeline

    keep_freed_memory()  # as predict.py does
    uri = tracking_uri or f"sqlite:///{ROOT}/mlruns/mlflow.db"  # the project's store (conf/tracking/local)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    pipeline = load_pipeline(model_uri)
    rows: dict[str, list[float]] = {}

    def timed(name, fn, *a):
        c, w = time.process_time(), time.perf_counter()
        out = fn(*a)
        rows.setdefault(name, [0.0, 0.0])
        rows[name][0] += time.perf_counter() - w
        rows[name][1] += time.process_time() - c
        return out

    window = Window(name="test")
    tables = timed("read + validate (loader)", lambda: list(
        coalesce(iter_tables(root, "test", window, batch_rows=batch_rows), batch_rows)))  # fmt: skip
    n = sum(t.num_rows for t in tables)
    prepared = [timed("features (extract + transform)", pipeline.prepare, t) for t in tables]
    model = pipeline.model
    for X in prepared:
        cols = timed("model: first stage (boosters)", model._columns, X)
        timed("model: stacking head", model.ensemble_.predict, cols, X)
    print(f"\n{'stage (' + str(n) + ' rows, serial)':<34} {'rows/s':>10} {'CPU us/row':>11} {'threads':>8}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<34} {n / wall:>10.0f} {cpu / n * 1e6:>11.1f} {cpu / wall:>8.1f}")
    total = sum(v[1] for v in rows.values())
    print(
        f"{'all stages':<34} {'':>10} {total / n * 1e6:>11.1f}   -> at most {2 / total * n:,.0f} rows/s on 2 cores"
    )


if __name__ == "__main__":
    main()
