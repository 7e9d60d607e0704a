"""Model server latency (single-row requests) and throughput (1,000-row requests), measured by the client.

    python bench/serve.py [--model-uri models:/ltv-pipeline@champion] [--requests 200] [--batches 20]
                          [--stages]   # also: where a one-row request's time goes, step by step
    python bench/serve.py --clients 1,8 [--workers 1] [--load-requests 400] [--load-seconds 60]
                          # concurrent mode: N keep-alive clients of single-row requests

Concurrent mode (``--clients``): for each N, N client threads, each with its own keep-alive connection
to 127.0.0.1, send single-row requests until ``--load-requests`` are answered in all or
``--load-seconds`` pass; the table gives requests/s, p50 / p99 latency and the ratio of requests/s to
the first N's. ``--workers`` starts the server with that many worker processes
(``mlflow models serve --workers``).

Starts ``mlflow models serve --env-manager local`` on 127.0.0.1 (a free port), waits for /ping, sends
``--requests`` single-row requests (p50 / p99 / max latency over one keep-alive connection) and
``--batches`` requests of ``--batch-rows`` rows (rows/s), prints a table and stops the server. Request rows
are contract rows: the test split of ``--data`` when given (e.g. data/synthetic), else seeded stand-in rows
with every nested kind populated. When the model URI does not resolve in the tracking store (no model
registered yet), a stand-in pipeline (``tests.helpers.stand_in.ConstantishPipeline``) is logged to a temp store
and served instead; the table says which. Goal (issue 6): single-row p50 under 20 ms on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ltv import contract as c  # noqa: E402
from ltv.serving.server import ModelServer  # noqa: E402
from tests.helpers.stand_in import ConstantishPipeline, contract_rows  # noqa: E402


def resolve_model(model_uri: str, tracking_uri: str, tmp: Path) -> tuple[str, str, str]:
    """(model_uri, tracking_uri, description): the requested model, or a stand-in logged to ``tmp``."""
    import mlflow

    from ltv.tracking import store
    from ltv.tracking.pyfunc import log_pipeline

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        mlflow.models.get_model_info(model_uri)
        return model_uri, tracking_uri, model_uri
    except Exception as e:  # noqa: BLE001 - any failure to resolve means: no such model here
        reason = f"{type(e).__name__}"
    uri = store.sqlite_uri(tmp / "mlruns")
    store.setup(uri, "bench-serve", tmp / "mlruns")
    with mlflow.start_run():
        log_pipeline(ConstantishPipeline())
    # the server unpickles the stand-in from tests.helpers: give it the repo root
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return "models:/ltv-pipeline@champion", uri, f"stand-in ConstantishPipeline ({model_uri}: {reason})"


def request_rows(n: int, data: str | None) -> tuple[list[dict], str]:
    """``n`` contract rows as JSON-ready records (maps as [key, value] lists, NaN as null)."""
    if data:
        import pyarrow.dataset as ds

        dataset = ds.dataset(Path(data) / "test", format="parquet", partitioning="hive")
        table = dataset.head(n, columns=c.FEATURE_COLUMNS + [c.PARTITION_COLUMN, c.ROW_ID])
        source = f"{data}/test"
    else:
        table, source = contract_rows(n, seed=7), "stand-in contract rows"
    return [_jsonable(r) for r in table.to_pylist()], source


def _jsonable(v):
    """NaN -> None and tuples -> lists, recursively (strict JSON, maps as [key, value] lists)."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def timed_post(session, url: str, records: list[dict]) -> float:
    body = json.dumps({"dataframe_records": records})
    t0 = time.perf_counter()
    resp = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
    dt = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"server answered {resp.status_code}: {resp.text[-1500:]}")
    if len(resp.json()["predictions"]) != len(records):
        raise RuntimeError("server returned a different number of predictions than rows sent")
    return dt


def server_cpu_s(server: ModelServer) -> float:
    """CPU seconds (user + system) used so far by the server's processes (the CLI and uvicorn)."""
    import psutil

    root = psutil.Process(server.proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def server_memory_mb(server: ModelServer) -> tuple[float, int]:
    """(MB of memory private to the server's processes (USS, summed), number of processes)."""
    import psutil

    root = psutil.Process(server.proc.pid)
    total, n = 0, 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().uss
            n += 1
        except psutil.NoSuchProcess:
            continue
    return total / 2**20, n


def run(args) -> tuple[float, list[tuple[str, str]]]:
    """(single-row p50 in ms, table rows)."""
    import requests

    with tempfile.TemporaryDirectory(prefix="ltv-bench-serve-") as tmp:
        model_uri, tracking_uri, what = resolve_model(args.model_uri, args.tracking_uri, Path(tmp))
        records, source = request_rows(max(args.batch_rows, args.requests), args.data)
        t0 = time.perf_counter()
        with ModelServer(model_uri, tracking_uri=tracking_uri, startup_timeout=180) as server:
            startup = time.perf_counter() - t0
            url = server.url + "/invocations"
            with requests.Session() as s:
                for i in range(10):  # warm-up: first requests import and allocate
                    timed_post(s, url, records[i : i + 1])
                cpu0 = server_cpu_s(server)
                single = np.array([timed_post(s, url, records[i : i + 1]) for i in range(args.requests)])
                cpu_single = (server_cpu_s(server) - cpu0) / args.requests * 1e3
                batch = records[: args.batch_rows]
                batch_s = np.array([timed_post(s, url, batch) for _ in range(args.batches)])
    single *= 1e3
    p50, p99 = np.percentile(single, [50, 99])
    load = os.getloadavg()[0]
    return float(p50), [
        ("model", what),
        ("request rows", source),
        ("server start to /ping", f"{startup:.1f} s"),
        (
            f"single-row requests ({args.requests})",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {single.max():.1f} ms",
        ),
        ("single-row p50 goal < 20 ms", "met" if p50 < 20 else "NOT met"),
        ("server CPU per single-row request", f"{cpu_single:.1f} ms (load-independent cost)"),
        (
            f"{args.batch_rows}-row requests ({args.batches})",
            f"{args.batch_rows * args.batches / batch_s.sum():,.0f} rows/s (median {np.median(batch_s) * 1e3:.0f} ms/request)",
        ),
        ("cpus, 1-min load average at the end", f"{os.cpu_count()}, {load:.1f}"),
    ]


def load_run(url: str, records: list[dict], clients: int, total: int, seconds: float) -> dict[str, float]:
    """``clients`` threads, one keep-alive session each, share ``total`` single-row requests (or stop
    after ``seconds``): requests/s over the wall time, p50 / p99 latency in ms."""
    import threading

    import requests

    bodies = [json.dumps({"dataframe_records": [r]}) for r in records]
    latencies: list[float] = []
    errors: list[str] = []
    lock, sent = threading.Lock(), [0]
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                with lock:
                    if sent[0] >= total:
                        return
                    i = sent[0]
                    sent[0] += 1
                t0 = time.perf_counter()
                resp = session.post(
                    url,
                    data=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if resp.status_code == 200 else errors.append(resp.text[-300:]))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 70)
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed under load, e.g.: {errors[0]}")
    lat = np.array(latencies) * 1e3
    p50, p99 = np.percentile(lat, [50, 99]) if len(lat) else (float("nan"),) * 2
    return {"requests": len(lat), "rps": len(lat) / wall, "p50": float(p50), "p99": float(p99), "wall": wall}


def concurrent_rows(args) -> list[tuple[str, str]]:
    """Start one server (``--workers``) and run :func:`load_run` for each N of ``--clients``."""
    import requests

    counts = [int(n) for n in str(args.clients).split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="ltv-bench-serve-") as tmp:
        model_uri, tracking_uri, what = resolve_model(args.model_uri, args.tracking_uri, Path(tmp))
        records, source = request_rows(200, args.data)
        with ModelServer(
            model_uri, tracking_uri=tracking_uri, startup_timeout=180, workers=args.workers
        ) as srv:
            url = srv.url + "/invocations"
            with requests.Session() as s:  # warm-up: imports, allocations, every worker's first requests
                for i in range(10 * args.workers):
                    timed_post(s, url, records[i % len(records) : i % len(records) + 1])
            results = [(n, load_run(url, records, n, args.load_requests, args.load_seconds)) for n in counts]
            memory, processes = server_memory_mb(srv)
    base = results[0][1]["rps"]
    rows = [("model", what), ("request rows", source), ("server workers", str(args.workers))]
    for n, r in results:
        rows.append(
            (
                f"{n} client{'s' * (n > 1)}, single-row ({r['requests']} requests)",
                f"{r['rps']:.1f} req/s ({r['rps'] / base:.2f}x), p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms",
            )
        )
    rows.append(("server memory (USS, all processes)", f"{memory:,.0f} MB in {processes} processes"))
    rows.append(("cpus, 1-min load average at the end", f"{os.cpu_count()}, {os.getloadavg()[0]:.1f}"))
    return rows


def stage_rows(
    model_uri: str, tracking_uri: str, records: list[dict], n: int, p50: float
) -> list[tuple[str, str]]:
    """Median milliseconds of each step of a single-row request, run in this process on the served
    model: MLflow's JSON parsing, the contract check (``frame_to_table``), features, encodings, the
    chain's first stage and its head. The client's p50 less their sum is the HTTP server's share."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from ltv.serving.coerce import frame_to_table

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    pipeline = model.unwrap_python_model().pipeline
    if not all(hasattr(pipeline, a) for a in ("features", "model")):
        return [("stages", f"not an LTVPipeline ({type(pipeline).__name__}): skipped")]
    schema = model.metadata.get_input_schema()
    chain = pipeline.model
    times: dict[str, list[float]] = {}
    last = "pyfunc predict, all of the above but parsing"

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    for _ in range(2):  # the first pass warms caches up; the second is reported
        times.clear()
        for record in records[:n]:
            body = json.dumps({"dataframe_records": [record]})
            frame = timed("MLflow: JSON -> DataFrame (schema)", scoring_server._parse_json_data, body,
                          model.metadata, schema).data  # fmt: skip
            table = timed("contract check (frame_to_table)", frame_to_table, frame)
            S = timed("features (extract)", pipeline.features.extract, table)
            X = timed("encodings (transform)", pipeline.features.transform, S)
            timed("the chain (boosters, gate, hurdle)", chain.predict, X)
            timed(last, model.predict, frame)
    rows = [(f"  {k}", f"{np.median(v) * 1e3:.2f} ms") for k, v in times.items()]
    served = (np.median(times["MLflow: JSON -> DataFrame (schema)"]) + np.median(times[last])) * 1e3
    return rows + [("  the rest: HTTP server, framework (p50 less the above)", f"{p50 - served:.2f} ms")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/ltv-pipeline@champion")
    default_store = f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", default_store))
    parser.add_argument("--requests", type=int, default=200, help="single-row requests")
    parser.add_argument("--batches", type=int, default=20, help="multi-row requests")
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--data", default=None, help="contract data root whose test split supplies rows")
    parser.add_argument("--stages", action="store_true", help="also time each step of a one-row request")
    parser.add_argument("--clients", default=None, help="concurrent mode: client counts, e.g. 1,8")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (concurrent mode)")
    parser.add_argument("--load-requests", type=int, default=400, help="requests per client count")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="time limit per client count")
    args = parser.parse_args(argv)
    if args.clients:
        _print(concurrent_rows(args))
        return
    p50, rows = run(args)
    if args.stages and dict(rows)["model"].startswith("stand-in"):
        rows.append(("single-row steps in process", "skipped: the stand-in model is not a chain"))
    elif args.stages:
        records, _ = request_rows(args.requests, args.data)
        rows.append(("single-row steps in process (median)", ""))
        rows += stage_rows(args.model_uri, args.tracking_uri, records, min(args.requests, 200), p50)
    _print(rows)


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{'bench/serve.py':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
