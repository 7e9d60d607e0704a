"""predict.py throughput and peak memory at two input sizes (at least 4x apart), engine against engine.

    python bench/predict.py [--rows 50000 --factor 4 --model-uri models:/ltv-pipeline@champion] [--stages]
                            [--tracking-uri sqlite:////path/to/mlruns/mlflow.db]
                            [--rows-per-hour 5000 --row-group-rows 0]   # large files: 200000 / 50000
                            [--against /path/to/old/checkout] [--repeats 3] [--cluster local]

Generates two contract test sets (N and factor*N rows) in a temp folder, runs `predict.py` on each in a
subprocess and reports rows/s (from predict.py's own timer, which starts once the model is loaded
everywhere), wall seconds and the peak RSS of predict.py with every process under it (the Dask
scheduler lives in predict.py; the nannies and workers are its children). Memory should not grow with
the input: each file group is read, scored and dropped on a worker.

``--against DIR`` runs the same inputs through another checkout's ``predict.py`` too (e.g. the engine
this one replaced: ``git worktree add /tmp/old <commit>``), interleaved with this one run by run, and
prints both side by side with their ratio (medians over ``--repeats``). Needs a registered model (run
`python train.py` first); the tracking store is the project's.

``--stages`` also runs each stage of predict.py alone on the larger input (loader, features, the chain)
and prints its CPU microseconds per row: their sum bounds what 2 cores
can score (2 / sum rows per microsecond).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_once(
    data_root: Path,
    out: Path,
    model_uri: str,
    batch_rows: int,
    tracking_uri: str | None = None,
    tree: Path = ROOT,
    extra: tuple[str, ...] = (),
) -> tuple[float, float, float]:
    """(rows/s reported by ``tree``'s predict.py, peak RSS in MB of it and every process under it,
    sampled every 20 ms, wall seconds)."""  # fmt: skip
    import psutil

    cmd = [
        sys.executable,
        str(tree / "predict.py"),
        f"data.root={data_root}",
        "data.generate=null",
        "data.oracle_root=null",
        f"output={out}",
        f"model_uri={model_uri}",
        f"data.batch_rows={batch_rows}",
    ]
    if tracking_uri:
        cmd.append(f"tracking.uri={tracking_uri}")
    cmd += list(extra)
    env = {**os.environ, "PYTHONPATH": str(tree)}  # each tree runs its own ltv
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tree, env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:  # predict.py and everything under it (Dask's nannies and workers; old: scoring processes)
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
    ap.add_argument("--against", type=Path, default=None, help="another checkout to run side by side")
    ap.add_argument("--repeats", type=int, default=1, help="runs per engine and size (medians reported)")
    ap.add_argument("--cluster", default="local", help="this tree's cluster option (local | sync)")
    ap.add_argument("--stages", action="store_true", help="also time each stage alone (CPU us per row)")
    args = ap.parse_args(argv)
    from ltv.synthetic import generate

    trees = {"this": (ROOT, (f"cluster={args.cluster}",))}
    if args.against:
        trees["against"] = (args.against.resolve(), ())
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for n in (args.rows, args.rows * args.factor):
            hours = max(1, n // args.rows_per_hour)
            roots[hours * args.rows_per_hour] = root = Path(tmp) / f"d{n}"
            generate(root, train_hours=1, test_hours=hours, rows_per_hour=args.rows_per_hour, seed=1)
            if args.row_group_rows > 0:
                _regroup(root / "test", args.row_group_rows)
        smallest = roots[min(roots)]
        for tree, extra in trees.values():  # untimed: compiles the trees into the cache once
            run_once(smallest, Path(tmp) / "warmup.csv", args.model_uri, args.batch_rows, args.tracking_uri,
                     tree, extra)  # fmt: skip
        for _ in range(args.repeats):  # interleaved: drift on a shared box hits both engines alike
            for n, root in roots.items():
                subs = []
                for name, (tree, extra) in trees.items():
                    sub = Path(tmp) / f"sub-{name}-{n}.csv"
                    results.setdefault((name, n), []).append(
                        run_once(root, sub, args.model_uri, args.batch_rows, args.tracking_uri, tree, extra)
                    )
                    subs.append(sub.read_bytes())
                if len(subs) == 2 and subs[0] != subs[1]:
                    print(f"WARNING: the two engines wrote different submissions for {n} rows")
        if args.stages:  # on the larger input
            stage_table(root, args.model_uri, args.tracking_uri, args.batch_rows)
    _table(results, trees, sorted(roots), args)


def _table(results, trees, sizes, args) -> None:
    med = {k: [statistics.median(v[i] for v in runs) for i in range(3)] for k, runs in results.items()}
    print(
        f"\n(batch_rows={args.batch_rows}, medians of {args.repeats} run(s); this tree: cluster={args.cluster})"
    )
    print(f"{'engine':<8} {'rows':>10} {'rows/s':>10} {'peak RSS MB':>12} {'wall s':>8}")
    for name in trees:
        for n in sizes:
            rate, peak, wall = med[(name, n)]
            print(f"{name:<8} {n:>10} {rate:>10.0f} {peak:>12.0f} {wall:>8.1f}")
        (_, p0, _), (_, p1, _) = med[(name, sizes[0])], med[(name, sizes[-1])]
        print(f"{name:<8} input x{sizes[-1] / sizes[0]:.1f} -> peak memory x{p1 / p0:.2f}")
    if "against" in trees:
        for n in sizes:
            r = med[("this", n)][0] / med[("against", n)][0]
            m = med[("this", n)][1] / med[("against", n)][1]
            print(f"this / against at {n} rows: rows/s x{r:.2f}, peak memory x{m:.2f}")


def stage_table(root: Path, model_uri: str, tracking_uri: str | None, batch_rows: int) -> None:
    """Where a row's time goes: each stage of predict.py run alone, one after another, in this process.

    CPU us/row is the budget that matters on 2 cores: 100k rows/s needs the stages to sum to <= 20.
    """
    import mlflow

    from ltv.data.groups import file_groups, read_group
    from ltv.data.window import Window
    from ltv.memory import keep_freed_memory
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
    groups, _ = file_groups(root, "test", window, batch_rows)
    tables = timed("read + validate (loader)", lambda: [read_group(g, "test", window)[0] for g in groups])
    n = sum(t.num_rows for t in tables)
    prepared = [
        timed("features (extract + transform)", pipeline._prepare, t) for t in tables if t is not None
    ]
    model = pipeline.model
    for X in prepared:
        timed("model: the chain (boosters, gate, hurdle)", model.predict, *X)
    print(f"\n{'stage (' + str(n) + ' rows, serial)':<34} {'rows/s':>10} {'CPU us/row':>11} {'threads':>8}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<34} {n / wall:>10.0f} {cpu / n * 1e6:>11.1f} {cpu / wall:>8.1f}")
    total = sum(v[1] for v in rows.values())
    print(
        f"{'all stages':<34} {'':>10} {total / n * 1e6:>11.1f}   -> at most {2 / total * n:,.0f} rows/s on 2 cores"
    )


if __name__ == "__main__":
    main()
