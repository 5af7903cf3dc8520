"""Benchmark the BentoML service against `mlflow models serve` on the same model, briefly or
as a soak (throughput, latency and the memory of every process, interval by interval).

Run from the project root with the venv active (``wrk`` from ``apt-get install wrk``)::

    python benchmarks/serving.py                                  # 15 s each measurement
    python benchmarks/serving.py --soak 600 --report-every 30     # 10 minutes of /predict

It trains the model with the project's stage scripts into a temporary folder and MLflow store
(``--data``: the real Kaggle file where it is, else the embedded synthetic data), imports it into
a temporary BentoML home and serves it as a user would: prediction log on, shipping to that
temporary store on (every ``--ship-interval`` s). Nothing of the project's stores is touched.
Both servers are driven by the same closed-loop client, ``wrk`` with keep-alive connections.
Each measurement also shows how busy the machine's cores were meanwhile and wrk's own share:
whether a server is limited by the CPU or by its round trips.

The brief run measures ``/predict`` with one worker and with the default (one per core), each
against ``mlflow models serve`` with as many workers (``-w``); BentoML's own client
(``SyncHTTPClient``, threads in this process) against plain ``httpx`` with as many threads;
batches; and the resident memory of every process of the service. A soak runs the default
workers and measures ``mlflow models serve`` for one interval before it and one after it: a
machine that slowed down meanwhile (other load, a throttled CPU) shows in the peer's figures too.
"""

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
    """SIGTERM the server and its workers (skipping any that ended meanwhile)."""
    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    for child in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGTERM)
    psutil.wait_procs(processes, timeout=30)


def resident_mb(process: subprocess.Popen) -> dict[str, float]:
    """Resident memory in MB of every process of a ``bentoml serve``: the server itself, each
    worker, the shipping process; and their sum."""
    root = psutil.Process(process.pid)
    memory = {"server": root.memory_info().rss / 1e6}
    for child in root.children(recursive=True):
        command = " ".join(child.cmdline())
        name = "shipping" if "shipping_process" in command else f"worker {len(memory)}"
        memory[name] = child.memory_info().rss / 1e6
    return memory | {"all": sum(memory.values())}


def memory_line(memory: dict[str, float]) -> str:
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in memory.items())


def start_bentoml(env: dict, workers: str | None, work: Path) -> tuple[subprocess.Popen, str]:
    """``bentoml serve`` with ``workers`` (None: the default), once every worker is ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"CREDIT_RISK_WORKERS": workers} if workers else {}
    log = work / f"bentoml-{workers or 'default'}.log"
    server = start(
        ["bentoml", "serve", SERVICE, "--port", str(port)], env | settings, log, f"{url}/readyz"
    )
    count = int(workers or os.cpu_count() or 1)
    deadline = time.monotonic() + 120  # /readyz answers once one worker is ready
    while log.read_text().count("Service CreditRiskService initialized") < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"not every worker started:\n{log.read_text()}")
        time.sleep(0.5)
    return server, url


def client_loop(url: str, threads: int, duration: float, bentoml_client: bool) -> float:
    """Requests/s of ``threads`` threads of this process calling ``/predict`` back to back for
    ``duration`` s, each with a ``bentoml.SyncHTTPClient`` or a plain ``httpx.Client``."""
    import bentoml
    import httpx

    done, counts = threading.Event(), [0] * threads

    def call(index: int) -> None:
        if bentoml_client:
            with bentoml.SyncHTTPClient(url) as client:
                while not done.is_set():
                    client.predict(**EXAMPLE_APPLICANT)
                    counts[index] += 1
        else:
            with httpx.Client(base_url=url) as client:
                while not done.is_set():
                    client.post("/predict", json=EXAMPLE_APPLICANT).raise_for_status()
                    counts[index] += 1

    workers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(2)  # warm-up: clients made, connections open
    before, started = sum(counts), time.monotonic()
    time.sleep(duration)
    rate = (sum(counts) - before) / (time.monotonic() - started)
    done.set()
    for worker in workers:
        worker.join()
    return rate


def wrk(url: str, body: dict, args, duration: float, connections: int, work: Path) -> dict:
    """Closed loop: ``connections`` post ``body`` back to back for ``duration`` s; requests/s,
    p50 and p99 in ms, errors (HTTP status >= 400, socket errors), and the CPU use meanwhile in
    % of all cores: of the whole machine, and of wrk's own."""
    (work / "body.json").write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT % json.dumps(str(work / "body.json")))
    threads = min(args.wrk_threads, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s"]
    psutil.cpu_percent()  # the machine's CPU use is measured from here
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        [*command, "--timeout", "60s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    machine = psutil.cpu_percent()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(output.strip().splitlines()[-1])
    wrk_seconds = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    wrk_share = 100 * wrk_seconds / result["seconds"] / psutil.cpu_count()
    rps = result["requests"] / result["seconds"]
    return result | {"rps": rps, "cpu": machine, "wrk cpu": wrk_share}


def line(name: str, result: dict) -> str:
    return (
        f"  {name:30} {result['rps']:8.0f} req/s  p50 {result['p50']:6.1f} ms  "
        f"p99 {result['p99']:6.1f} ms  errors {result['errors']}  "
        f"CPU {result['cpu']:3.0f} % (wrk {result['wrk cpu']:2.0f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA if REAL_DATA.is_file() else None)
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--rows", type=int, default=10_000, help="rows per batch request")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--client-threads", type=int, default=4)
    parser.add_argument("--ship-interval", type=float, default=30)
    parser.add_argument("--soak", type=float, help="soak for this many seconds instead")
    parser.add_argument("--report-every", type=float, default=30)
    args = parser.parse_args()
    data = (args.data or PROJECT / "data" / "gmsc-synthetic.csv").resolve()
    cores = os.cpu_count() or 1

    work = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    print(f"model trained on {data}; stores and logs in {work}", flush=True)
    env = trained_project(work, data)
    bento_env = env | {
        "CREDIT_RISK_PREDICTION_LOG": str(work / "predictions"),
        "CREDIT_RISK_SHIP_INTERVAL": str(args.ship_interval),
    }
    print(f"load average at start {os.getloadavg()}; {cores} cores", flush=True)
    if args.soak:
        theirs = measure_mlflow(env, work, args, str(cores), args.report_every)
        bento, url = start_bentoml(bento_env, None, work)
        try:
            last = soak(bento, url, theirs, args, work)
        finally:
            stop(bento)
        # The machine's own drift: the peer measured again, after the soak.
        after = measure_mlflow(env, work, args, str(cores), args.report_every)
        print(line("mlflow models serve", after["single"][0]) + "  (after the soak)")
        print(f"  last interval {last['rps'] / after['single'][0]['rps']:.1f}x mlflow after it")
        print(f"load average at end {os.getloadavg()}")
        return

    batch = distinct_applicants(data, args.rows)
    theirs = {
        "1": measure_mlflow(env, work, args, "1", args.duration, batch),
        str(cores): measure_mlflow(env, work, args, str(cores), args.duration),
    }
    ours = {}
    for workers in ("1", None):
        bento, url = start_bentoml(bento_env, workers, work)
        try:
            wrk(f"{url}/predict", EXAMPLE_APPLICANT, args, 2, 8, work)  # warm-up
            ours[workers or str(cores)] = result = {
                "single": [
                    wrk(f"{url}/predict", EXAMPLE_APPLICANT, args, args.duration, c, work)
                    for c in args.concurrency
                ]
            }
            if workers is None:
                threads, duration = args.client_threads, args.duration
                result["bentoml client"] = client_loop(url, threads, duration, True)
                result["httpx client"] = client_loop(url, threads, duration, False)
                with_reasons = reasons_given(f"{url}/predict/batch", batch)
                result["batch"] = wrk(
                    f"{url}/predict/batch", {"applicants": batch}, args, args.duration, 1, work
                )
                result["memory"] = resident_mb(bento)
        finally:
            stop(bento)
    report(args, data, cores, ours, theirs, with_reasons)


def report(args, data: Path, cores: int, ours: dict, theirs: dict, with_reasons: int) -> None:
    print(f"wrk -t{args.wrk_threads}; load average at end {os.getloadavg()}")
    print(f"/predict, one applicant, {args.duration:g} s each:")
    for workers in ("1", str(cores)):
        for c, mine, peer in zip(
            args.concurrency, ours[workers]["single"], theirs[workers]["single"], strict=True
        ):
            print(line(f"bentoml, {workers} worker(s), c{c}", mine))
            print(line(f"mlflow -w {workers}, c{c}", peer))
            print(f"  ratio {mine['rps'] / peer['rps']:.1f}x req/s")
    default, single = ours[str(cores)]["single"][0], ours["1"]["single"][0]
    print(f"  default workers vs one worker, c{args.concurrency[0]}: "
          f"{default['rps'] / single['rps']:.2f}x req/s")  # fmt: skip
    by_default = ours[str(cores)]
    bentoml_client, httpx_client = by_default["bentoml client"], by_default["httpx client"]
    print(
        f"/predict from {args.client_threads} threads of this Python process, default workers "
        f"(the client's own cost shows: the route is the one wrk measures above): "
        f"bentoml.SyncHTTPClient {bentoml_client:.0f} req/s, plain httpx {httpx_client:.0f} req/s"
    )
    our_batch, their_batch = ours[str(cores)]["batch"], theirs["1"]["batch"]
    print(
        f"batches of {args.rows} different applicants from {data.name}, one connection, "
        f"{args.duration:g} s (reasons included: {with_reasons} of {args.rows} answers name at "
        "least one; mlflow -w 1: bare probabilities):"
    )
    for name, result in (("bentoml", our_batch), ("mlflow models serve", their_batch)):
        print(
            f"  {name:18} {result['rps'] * args.rows:8.0f} rows/s  p50 {result['p50']:6.1f} ms "
            f"per batch  errors {result['errors']}"
        )
    print(f"  ratio {our_batch['rps'] / their_batch['rps']:.2f}x rows/s")
    print(f"resident memory, default workers: {memory_line(ours[str(cores)]['memory'])}")


def measure_mlflow(env: dict, work: Path, args, workers: str, duration: float,
                   batch: list[dict] | None = None) -> dict:  # fmt: skip
    """``mlflow models serve -w workers`` on the Production model: one applicant per request
    for ``duration`` s at each concurrency, then ``batch`` (if any) per request; the server is
    stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    values = [[EXAMPLE_APPLICANT[name] for name in FEATURE_NAMES]]
    frame = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": values}}
    mlflow = start(
        ["mlflow", "models", "serve", "-m", "models:/credit-risk-model@production", "-w", workers]
        + ["--env-manager", "local", "-p", str(port), "--host", "127.0.0.1"],
        env,
        work / f"mlflow-{workers}.log",
        f"{url}/ping",
    )
    try:
        wrk(f"{url}/invocations", frame, args, 5, 8, work)  # warm-up, every worker started
        concurrency = args.concurrency[:1] if args.soak else args.concurrency
        result = {
            "single": [wrk(f"{url}/invocations", frame, args, duration, c, work)
                       for c in concurrency]
        }  # fmt: skip
        if batch is not None:
            rows = [[applicant[name] for name in FEATURE_NAMES] for applicant in batch]
            many = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": rows}}
            result["batch"] = wrk(f"{url}/invocations", many, args, args.duration, 1, work)
        return result
    finally:
        stop(mlflow)


def soak(bento: subprocess.Popen, url: str, theirs: dict, args, work: Path) -> dict:
    """``/predict`` for ``args.soak`` seconds, one report line per interval; the last one."""
    concurrency = args.concurrency[0]
    print(
        f"soak: /predict, default workers, concurrency {concurrency}, wrk -t{args.wrk_threads}, "
        f"{args.report_every:g} s intervals; shipping every {args.ship_interval:g} s"
    )
    peer = theirs["single"][0]
    print(line("mlflow models serve", peer) + "  (one interval, before the soak)")
    first = result = None
    started = time.monotonic()
    for number in range(int(args.soak // args.report_every)):
        result = wrk(
            f"{url}/predict", EXAMPLE_APPLICANT, args, args.report_every, concurrency, work
        )
        first = first or result
        elapsed = time.monotonic() - started
        print(
            f"{line(f'{number + 1:2d} at {elapsed:5.0f} s', result)}  "
            f"{result['rps'] / first['rps']:4.0%} of first, {result['rps'] / peer['rps']:.1f}x "
            f"mlflow; RSS {memory_line(resident_mb(bento))}",
            flush=True,
        )
    return result


if __name__ == "__main__":
    main()
