"""Benchmark rollout under load: promotions while ``wrk`` drives ``/predict``.

Run from the project root with the venv active (``wrk`` from ``apt-get install wrk``)::

    python benchmarks/rollout.py                  # 120 s with promotions, 120 s without

It starts a real ``mlflow server`` in a temporary folder, trains two models into it with the
project's stage scripts (version 1: the params as they are, made Production; version 2: logistic
regression, registered as challenger), imports version 1 and serves it with ``bentoml serve``.
Then ``wrk -t2 -c8`` posts one applicant back to back for ``--duration`` seconds twice: once
without promotions (the baseline), once with ``credit-risk promote`` switching Production
between the two versions every ``--every`` seconds, while a probe asks ``/predict`` every 50 ms
which version answers. Last, with no load, it promotes until the worker has swapped models
``--swaps`` times and reports its resident memory growth (old models must be freed).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import psutil
from serving import PROJECT, REAL_DATA, SERVICE, STAGES, free_port, start, stop, wrk

from credit_risk.ml.contract import EXAMPLE_APPLICANT

CREDIT_RISK = str(Path(sys.executable).parent / "credit-risk")
SECOND_MODEL = {
    "model: hist_gradient_boosting": "model: logistic_regression",
    "promote: auto": "promote: manual",
}


def train_two_versions(work: Path, data: Path, env: dict) -> None:
    """Version 1 (params.yaml as it is) in Production, version 2 (logistic regression) as
    challenger, both trained by the stage scripts into the tracking server of ``env``."""
    shutil.copytree(PROJECT / "stages", work / "stages")
    params = (PROJECT / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("data/gmsc-synthetic.csv", str(data))
    for changes in ({}, SECOND_MODEL):
        edited = params
        for old, new in changes.items():
            assert old in edited, f"params.yaml has no {old!r}"
            edited = edited.replace(old, new)
        (work / "params.yaml").write_text(edited)
        for stage in STAGES:
            subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=work, env=env, check=True)
    subprocess.run([CREDIT_RISK, "import"], cwd=work, env=env, check=True)


def promote(version: str, work: Path, env: dict) -> float:
    """``credit-risk promote`` (the real CLI); the time it returned."""
    reason = ["--reason", "rollout benchmark", "--override-gate"]
    subprocess.run([CREDIT_RISK, "promote", version, *reason], cwd=work, env=env, check=True,
                   capture_output=True)  # fmt: skip
    return time.monotonic()


class Probe(threading.Thread):
    """Asks ``/predict`` every 50 ms which version answers; keeps (time, version or status)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.done = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.done.is_set():
                answer = client.post(f"{self.url}/predict", json=EXAMPLE_APPLICANT)
                seen = answer.json()["model_version"] if answer.status_code == 200 else None
                self.answers.append((time.monotonic(), seen, answer.status_code))
                time.sleep(0.05)

    def first_answer_from(self, version: str, after: float) -> float | None:
        return next((t for t, seen, _ in self.answers if t >= after and seen == version), None)


def worker(server: subprocess.Popen) -> psutil.Process:
    return max(psutil.Process(server.pid).children(), key=lambda p: p.memory_info().rss)


def health_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        return answer.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA if REAL_DATA.is_file() else None)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--every", type=float, default=20, help="seconds between promotions")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2)
    args = parser.parse_args()
    data = (args.data or PROJECT / "data" / "gmsc-synthetic.csv").resolve()

    work = Path(tempfile.mkdtemp(prefix="rollout-benchmark-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tracking = start(
        ["mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
         "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        os.environ,
        work / "mlflow.log",
        f"{url}/health",
    )  # fmt: skip
    env = os.environ | {
        "MLFLOW_TRACKING_URI": url,
        "BENTOML_HOME": str(work / "bentoml"),
        "DVC_ROOT": str(work),
        "CREDIT_RISK_PREDICTION_LOG": str(work / "predictions"),
        "CREDIT_RISK_APPROVER": "rollout benchmark",
    }
    try:
        print(f"models trained on {data}; stores and logs in {work}", flush=True)
        train_two_versions(work, data, env)
        service_url = f"http://127.0.0.1:{free_port()}"
        service = start(
            ["bentoml", "serve", SERVICE, "--port", service_url.rsplit(":", 1)[1]],
            env,
            work / "bentoml.log",
            f"{service_url}/readyz",
        )
        try:
            measure(service, service_url, work, env, args)
        finally:
            stop(service)
    finally:
        stop(tracking)


def measure(service: subprocess.Popen, url: str, work: Path, env: dict, args) -> None:
    predict = f"{url}/predict"
    interval = os.environ.get("CREDIT_RISK_REGISTRY_CHECK_INTERVAL", "2")
    print(f"load average at start {os.getloadavg()}; registry check every {interval} s")
    wrk(predict, EXAMPLE_APPLICANT, args, 2, args.concurrency, work)  # warm-up
    baseline = wrk(predict, EXAMPLE_APPLICANT, args, args.duration, args.concurrency, work)
    process = worker(service)
    before = process.memory_info().rss / 1e6

    probe = Probe(url)
    probe.start()
    promotions: list[tuple[str, float]] = []

    def promote_periodically() -> None:
        started = time.monotonic()
        for number in range(1, int(args.duration // args.every)):
            time.sleep(max(0.0, started + number * args.every - time.monotonic()))
            version = "2" if number % 2 else "1"
            promotions.append((version, promote(version, work, env)))

    promoter = threading.Thread(target=promote_periodically)
    promoter.start()
    rolled = wrk(predict, EXAMPLE_APPLICANT, args, args.duration, args.concurrency, work)
    promoter.join()
    deadline = time.monotonic() + 30  # the last promotion may be served after wrk ended
    while (
        promotions and not probe.first_answer_from(*promotions[-1]) and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    probe.done.set()
    probe.join()
    delays = [(probe.first_answer_from(v, t) or float("inf")) - t for v, t in promotions]
    probe_failures = sum(1 for *_, status in probe.answers if status != 200)

    print(f"wrk -t{args.wrk_threads} -c{args.concurrency} on /predict, {args.duration:g} s each:")
    for name, result in (("no promotions", baseline), ("promotions", rolled)):
        print(
            f"  {name:14} {result['rps']:7.0f} req/s  p50 {result['p50']:6.1f} ms  "
            f"p99 {result['p99']:6.1f} ms  non-2xx or socket errors {result['errors']}"
        )
    print(f"  p99 with promotions / without: {rolled['p99'] / baseline['p99']:.2f}x (target <= 2x)")
    print(
        f"  {len(promotions)} promotions every {args.every:g} s; seconds from `credit-risk "
        f"promote` returning to the first answer from the new version: "
        + ", ".join(f"{d:.1f}" for d in delays)
        + f" (max {max(delays):.1f}, target <= 5)"
    )
    print(f"  probe: {len(probe.answers)} requests, {probe_failures} not 200")

    swaps = len(promotions)
    current = promotions[-1][0] if promotions else "1"
    while swaps < args.swaps:
        current = "2" if current == "1" else "1"
        promote(current, work, env)
        deadline = time.monotonic() + 30
        while f'"model_version":"{current}"' not in health_text(url).replace(" ", ""):
            assert time.monotonic() < deadline, f"version {current} not served within 30 s"
            time.sleep(0.2)
        swaps += 1
    after = process.memory_info().rss / 1e6
    print(
        f"  worker RSS before the first swap {before:.1f} MB, after {swaps} swaps "
        f"{after:.1f} MB: growth {after - before:+.1f} MB (target <= 30)"
    )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
