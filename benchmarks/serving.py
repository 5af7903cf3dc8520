"""Benchmark the BentoML service against `mlflow models serve` on the same Production model.

Run from the project root with the venv active::

    python benchmarks/serving.py [--duration 15] [--concurrency 8] [--rows 10000]

Both servers run as subprocesses on loopback ports; this process drives them (aiohttp,
keep-alive connections). The Production model is imported into a temporary BentoML home and the
service's prediction log and MLflow shipping go to temporary folders, so the project's stores are
only read.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

from credit_risk.contract import FEATURE_NAMES
from credit_risk.params import load_params
from credit_risk.tracking import MODEL_NAME, PRODUCTION_ALIAS, embedded_tracking_uri

SAMPLE = {
    "RevolvingUtilizationOfUnsecuredLines": 0.35,
    "age": 45,
    "NumberOfTime30_59DaysPastDueNotWorse": 0,
    "DebtRatio": 0.3,
    "MonthlyIncome": 5400.0,
    "NumberOfOpenCreditLinesAndLoans": 8,
    "NumberOfTimes90DaysLate": 0,
    "NumberRealEstateLoansOrLines": 1,
    "NumberOfTime60_89DaysPastDueNotWorse": 0,
    "NumberOfDependents": None,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server and its workers."""
    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    for child in processes:
        child.send_signal(signal.SIGTERM)
    psutil.wait_procs(processes, timeout=30)


async def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()}")
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} not ready:\n{log.read_text()}")


async def load(url: str, body: bytes, concurrency: int, duration: float) -> dict:
    """Closed loop: ``concurrency`` clients post ``body`` back to back for ``duration`` s."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(until: float) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                began = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - began)

        warm_until = time.perf_counter() + 2
        await asyncio.gather(*(client(warm_until) for _ in range(concurrency)))
        latencies.clear()
        began = time.perf_counter()
        await asyncio.gather(*(client(began + duration) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
    }


async def batch_rate(url: str, body: bytes, rows: int, repeats: int = 5) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}):
            pass
        began = time.perf_counter()
        for _ in range(repeats):
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                await answer.read()
                if answer.status != 200:
                    raise SystemExit(f"{url}: {answer.status} {(await answer.text())[:300]}")
        return rows * repeats / (time.perf_counter() - began)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()

    root = Path.cwd()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)
    work = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    params = load_params(root / "params.yaml")
    params.setdefault("serve", {}).setdefault("threshold", 0.5)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking, "BENTOML_HOME": str(work / "bentoml")}
    subprocess.run(
        [sys.executable, "-m", "credit_risk.service", "import", "--params", "params.yaml"],
        env=env,
        cwd=work,
        check=True,
    )
    bento_env = env | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'serving.db'}",
        "CREDIT_RISK_PREDICTION_LOG": str(work / "predictions"),
    }
    bento_port, mlflow_port = free_port(), free_port()
    bento = start(
        ["bentoml", "serve", "credit_risk.service:CreditRiskService", "--port", str(bento_port)],
        bento_env,
        work / "bentoml.log",
    )
    model_uri = f"models:/{MODEL_NAME}@{PRODUCTION_ALIAS}"
    served = start(
        ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["-p", str(mlflow_port), "--host", "127.0.0.1"],
        env,
        work / "mlflow.log",
    )
    try:
        bento_url, mlflow_url = f"http://127.0.0.1:{bento_port}", f"http://127.0.0.1:{mlflow_port}"
        await wait_ready(f"{bento_url}/readyz", bento, work / "bentoml.log")
        await wait_ready(f"{mlflow_url}/ping", served, work / "mlflow.log")

        values = [[SAMPLE[name] for name in FEATURE_NAMES]]
        frame = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": values}}
        results = {
            "bentoml": await load(
                f"{bento_url}/predict", json.dumps(SAMPLE).encode(), args.concurrency, args.duration
            ),
            "mlflow": await load(
                f"{mlflow_url}/invocations",
                json.dumps(frame).encode(),
                args.concurrency,
                args.duration,
            ),
        }
        frame["dataframe_split"]["data"] = values * args.rows
        bento_rows = await batch_rate(
            f"{bento_url}/predict/batch",
            json.dumps({"applicants": [SAMPLE] * args.rows}).encode(),
            args.rows,
        )
        mlflow_rows = await batch_rate(
            f"{mlflow_url}/invocations", json.dumps(frame).encode(), args.rows
        )
    finally:
        stop(bento)
        stop(served)

    print(f"single applicant, concurrency {args.concurrency}, {args.duration:g} s:")
    for name, result in results.items():
        print(
            f"  {name:8} {result['rps']:8.0f} req/s  p50 {result['p50']:6.1f} ms  "
            f"p99 {result['p99']:6.1f} ms  non-200 {result['errors']}"
        )
    bento_result, mlflow_result = results["bentoml"], results["mlflow"]
    print(
        f"  ratio    {bento_result['rps'] / mlflow_result['rps']:.1f}x req/s, "
        f"p99 {bento_result['p99'] / mlflow_result['p99']:.2f}x"
    )
    print(f"batch of {args.rows} rows:")
    print(f"  bentoml  {bento_rows:8.0f} rows/s")
    print(f"  mlflow   {mlflow_rows:8.0f} rows/s")
    print(f"  ratio    {bento_rows / mlflow_rows:.1f}x")
    print(f"(logs and temporary stores in {work})")


if __name__ == "__main__":
    asyncio.run(main())
