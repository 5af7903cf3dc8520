"""Benchmark the BentoML service against `mlflow models serve` on the same model, briefly or
as a soak (throughput, latency and the worker's memory, interval by interval).

Run from the project root with the venv active (``wrk`` from ``apt-get install wrk``)::

    python benchmarks/serving.py                                  # 15 s each, single and batch
    python benchmarks/serving.py --soak 600 --report-every 30     # 10 minutes of /predict

It trains the model with the project's stage scripts into a temporary folder and MLflow store
(``--data``: the real Kaggle file where it is, else the embedded synthetic data), imports it into
a temporary BentoML home and serves it as a user would: prediction log on, shipping to that
temporary store on (every ``--ship-interval`` s). Nothing of the project's stores is touched.
Both servers are driven by the same closed-loop client, ``wrk`` with keep-alive connections.
A soak measures ``mlflow models serve`` for one interval before it and one after it: a machine
that slowed down meanwhile (other load, a throttled CPU) shows in the peer's figures too.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from credit_risk.ml.contract import EXAMPLE_APPLICANT, FEATURE_NAMES, FEATURES
from credit_risk.ml.data import load_applicants

PROJECT = Path(__file__).resolve().parent.parent
REAL_DATA = PROJECT.parent / "shared/data/gmsc/cs-training.csv"
SERVICE = "credit_risk.serving.service:CreditRiskService"
STAGES = ("prepare", "fingerprint", "train", "register")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(%s, "rb"):read("*a")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "seconds": %%f, "p50": %%f, "p99": %%f, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def distinct_applicants(data: Path, count: int) -> list[dict]:
    """``count`` different applicants (the first rows of ``data``, the file the model was
    trained on: the real ones where they are), as the API takes them: realistic batches, where
    no two rows share their scoring work."""
    rows = load_applicants(data).head(count)
    integers = {feature.name for feature in FEATURES if feature.integer}
    return [
        {name: None if value != value else int(value) if name in integers else value
         for name, value in zip(FEATURE_NAMES, row, strict=True)}
        for row in rows.loc[:, FEATURE_NAMES].itertuples(index=False)
    ]  # fmt: skip


def reasons_given(url: str, batch: list[dict]) -> int:
    """Post ``batch`` once; how many of its answers name at least one reason code."""
    request = urllib.request.Request(
        url, json.dumps({"applicants": batch}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        predictions = json.load(answer)["predictions"]
    if len(predictions) != len(batch):
        raise SystemExit(f"{url}: {len(predictions)} answers for {len(batch)} applicants")
    return sum(bool(prediction["reasons"]) for prediction in predictions)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trained_project(work: Path, data: Path) -> dict:
    """Train and register the model in ``work``; the environment that uses its stores."""
    shutil.copytree(PROJECT / "stages", work / "stages")
    params = (PROJECT / "params.yaml").read_text(encoding="utf-8")
    (work / "params.yaml").write_text(params.replace("data/gmsc-synthetic.csv", str(data)))
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "BENTOML_HOME": str(work / "bentoml"),
        "DVC_ROOT": str(work),
    }
    for stage in STAGES:
        subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=work, env=env, check=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "credit-risk"), "import"], cwd=work, env=env, check=True
    )
    return env


def start(command: list[str], env: dict, log: Path, ready: str) -> subprocess.Popen:
    """Start a server and wait until ``ready`` answers 200."""
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(ready, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{ready} not ready:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server and its workers."""
    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    for child in processes:
        child.send_signal(signal.SIGTERM)
    psutil.wait_procs(processes, timeout=30)


def resident_mb(process: subprocess.Popen) -> tuple[float, float]:
    """Resident memory in MB of the server's worker (its largest child process) and of the
    worker's own children (the prediction log's shipping process)."""
    worker = max(psutil.Process(process.pid).children(), key=lambda p: p.memory_info().rss)
    return worker.memory_info().rss / 1e6, sum(
        child.memory_info().rss for child in worker.children()
    ) / 1e6


def wrk(url: str, body: dict, args, duration: float, connections: int, work: Path) -> dict:
    """Closed loop: ``connections`` post ``body`` back to back for ``duration`` s; requests/s,
    p50 and p99 in ms, errors (HTTP status >= 400, socket errors)."""
    (work / "body.json").write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT % json.dumps(str(work / "body.json")))
    threads = min(args.wrk_threads, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s"]
    output = subprocess.run(
        [*command, "--timeout", "60s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return result | {"rps": result["requests"] / result["seconds"]}


def line(name: str, result: dict) -> str:
    return (
        f"  {name:18} {result['rps']:8.0f} req/s  p50 {result['p50']:6.1f} ms  "
        f"p99 {result['p99']:6.1f} ms  errors {result['errors']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA if REAL_DATA.is_file() else None)
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per batch request")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--ship-interval", type=float, default=30)
    parser.add_argument("--soak", type=float, help="soak for this many seconds instead")
    parser.add_argument("--report-every", type=float, default=30)
    args = parser.parse_args()
    data = (args.data or PROJECT / "data" / "gmsc-synthetic.csv").resolve()

    work = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    print(f"model trained on {data}; stores and logs in {work}", flush=True)
    env = trained_project(work, data)
    bento_env = env | {
        "CREDIT_RISK_PREDICTION_LOG": str(work / "predictions"),
        "CREDIT_RISK_SHIP_INTERVAL": str(args.ship_interval),
    }
    bento_port = free_port()
    bento_url = f"http://127.0.0.1:{bento_port}"
    interval = args.report_every if args.soak else args.duration
    batch = None if args.soak else distinct_applicants(data, args.rows)

    print(f"load average at start {os.getloadavg()}", flush=True)
    theirs, their_batch = measure_mlflow(env, work, args, interval, batch)
    bento = start(
        ["bentoml", "serve", SERVICE, "--port", str(bento_port)],
        bento_env,
        work / "bentoml.log",
        f"{bento_url}/readyz",
    )
    try:
        wrk(f"{bento_url}/predict", EXAMPLE_APPLICANT, args, 2, args.concurrency, work)
        if args.soak:
            last = soak(bento, bento_url, theirs, args, work)
        else:
            ours = wrk(
                f"{bento_url}/predict", EXAMPLE_APPLICANT, args, interval, args.concurrency, work
            )
            with_reasons = reasons_given(f"{bento_url}/predict/batch", batch)
            our_batch = wrk(
                f"{bento_url}/predict/batch", {"applicants": batch}, args, args.duration, 1, work
            )
    finally:
        stop(bento)
    if args.soak:
        # The machine's own drift: the peer measured again, after the soak.
        after, _ = measure_mlflow(env, work, args, interval, None)
        print(line("mlflow models serve", after) + "  (one interval, after the soak)")
        print(f"  last interval {last['rps'] / after['rps']:.1f}x mlflow after the soak")
        print(f"load average at end {os.getloadavg()}")
        return
    print(f"wrk -t{args.wrk_threads}; load average at end {os.getloadavg()}")
    print(f"single applicant, concurrency {args.concurrency}, {args.duration:g} s:")
    print(line("bentoml", ours))
    print(line("mlflow models serve", theirs))
    print(
        f"  ratio {ours['rps'] / theirs['rps']:.1f}x req/s, p99 {ours['p99'] / theirs['p99']:.2f}x"
    )
    print(
        f"batches of {args.rows} different applicants from {data.name}, one connection, "
        f"{args.duration:g} s (reasons included: {with_reasons} of {args.rows} answers name at "
        "least one; mlflow: bare probabilities):"
    )
    for name, result in (("bentoml", our_batch), ("mlflow models serve", their_batch)):
        print(
            f"  {name:18} {result['rps'] * args.rows:8.0f} rows/s  p50 {result['p50']:6.1f} ms "
            f"per batch  errors {result['errors']}"
        )
    print(f"  ratio {our_batch['rps'] / their_batch['rps']:.2f}x rows/s")


def measure_mlflow(env: dict, work: Path, args, duration: float, batch: list[dict] | None):
    """``mlflow models serve`` on the Production model: one applicant per request for
    ``duration`` s, then ``batch`` (if any) per request; the server is stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    values = [[EXAMPLE_APPLICANT[name] for name in FEATURE_NAMES]]
    frame = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": values}}
    mlflow = start(
        ["mlflow", "models", "serve", "-m", "models:/credit-risk-model@production"]
        + ["--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"],
        env,
        work / "mlflow.log",
        f"{url}/ping",
    )
    try:
        wrk(f"{url}/invocations", frame, args, 2, args.concurrency, work)  # warm-up
        single = wrk(f"{url}/invocations", frame, args, duration, args.concurrency, work)
        if batch is None:
            return single, None
        rows = [[applicant[name] for name in FEATURE_NAMES] for applicant in batch]
        many = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": rows}}
        return single, wrk(f"{url}/invocations", many, args, args.duration, 1, work)
    finally:
        stop(mlflow)


def soak(bento: subprocess.Popen, url: str, theirs: dict, args, work: Path) -> dict:
    """``/predict`` for ``args.soak`` seconds, one report line per interval; the last one."""
    print(
        f"soak: /predict, concurrency {args.concurrency}, wrk -t{args.wrk_threads}, "
        f"{args.report_every:g} s intervals; shipping every {args.ship_interval:g} s"
    )
    print(line("mlflow models serve", theirs) + "  (one interval, before the soak)")
    first = result = None
    started = time.monotonic()
    for number in range(int(args.soak // args.report_every)):
        result = wrk(
            f"{url}/predict", EXAMPLE_APPLICANT, args, args.report_every, args.concurrency, work
        )
        first = first or result
        elapsed = time.monotonic() - started
        worker, shipping = resident_mb(bento)
        print(
            f"{line(f'{number + 1:2d} at {elapsed:5.0f} s', result)}  "
            f"{result['rps'] / first['rps']:4.0%} of first, {result['rps'] / theirs['rps']:.1f}x "
            f"mlflow, RSS worker {worker:5.1f} MB, shipping {shipping:5.1f} MB",
            flush=True,
        )
    return result


if __name__ == "__main__":
    main()
