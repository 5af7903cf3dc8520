"""Benchmark the BentoML service against `mlflow models serve` on the same Production model.

Run from the project root with the venv active::

    python benchmarks/serving.py [--duration 15] [--concurrency 8] [--rows 10000]

Both servers run as subprocesses on loopback ports, driven by the same client, ``wrk`` (C,
keep-alive connections, one thread: ``apt-get install wrk``), so that the client takes little
of the CPU the servers share with it. The Production model is imported into a temporary BentoML
home and the service's prediction log goes to a temporary folder; shipping to MLflow is put off
(a day's interval), so the project's stores are only read.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import psutil

from credit_risk.ml.contract import EXAMPLE_APPLICANT, FEATURE_NAMES
from credit_risk.registry.names import MODEL_NAME, PRODUCTION_ALIAS
from credit_risk.registry.store import embedded_tracking_uri

SERVICE = "credit_risk.serving.service:CreditRiskService"


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


def wrk(url: str, body: dict, concurrency: int, duration: float, work: Path) -> dict:
    """Closed loop: ``concurrency`` connections post ``body`` back to back for ``duration`` s.

    Returns requests/s, p50 and p99 in ms, and errors (HTTP status >= 400, socket errors).
    A 2 s run first warms the server up.
    """
    (work / "body.json").write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT % json.dumps(str(work / "body.json")))
    for seconds in (2, duration):
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "60s"]
        output = subprocess.run(
            [*command, "-s", str(script), url], capture_output=True, text=True, check=True
        ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()

    print(f"load average at start {os.getloadavg()}", flush=True)
    root = Path.cwd()
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or embedded_tracking_uri(root)
    work = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking, "BENTOML_HOME": str(work / "bentoml")}
    credit_risk = str(Path(sys.executable).parent / "credit-risk")
    subprocess.run([credit_risk, "import"], env=env, cwd=work, check=True)
    bento_env = env | {
        "CREDIT_RISK_PREDICTION_LOG": str(work / "predictions"),
        "CREDIT_RISK_SHIP_INTERVAL": "86400",  # the service checks the store but ships nothing
    }
    bento_port, mlflow_port = free_port(), free_port()
    bento = start(
        ["bentoml", "serve", SERVICE, "--port", str(bento_port)],
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

        values = [[EXAMPLE_APPLICANT[name] for name in FEATURE_NAMES]]
        frame = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": values}}
        many = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": values * args.rows}}
        servers = {
            "bentoml": (
                (f"{bento_url}/predict", EXAMPLE_APPLICANT),
                (f"{bento_url}/predict/batch", {"applicants": [EXAMPLE_APPLICANT] * args.rows}),
            ),
            "mlflow": ((f"{mlflow_url}/invocations", frame), (f"{mlflow_url}/invocations", many)),
        }
        single, batches = {}, {}
        for name, ((url, body), (batch_url, batch_body)) in servers.items():
            single[name] = wrk(url, body, args.concurrency, args.duration, work)
            batches[name] = wrk(batch_url, batch_body, 1, args.duration, work)
    finally:
        stop(bento)
        stop(served)

    print(f"client: wrk, 1 thread; load average at end {os.getloadavg()}")
    print(f"single applicant, concurrency {args.concurrency}, {args.duration:g} s:")
    for name, result in single.items():
        print(
            f"  {name:8} {result['rps']:8.0f} req/s  p50 {result['p50']:6.1f} ms  "
            f"p99 {result['p99']:6.1f} ms  errors {result['errors']}"
        )
    ours, theirs = single["bentoml"], single["mlflow"]
    ratio = ours["rps"] / theirs["rps"]
    print(f"  ratio    {ratio:.1f}x req/s, p99 {ours['p99'] / theirs['p99']:.2f}x")
    print(f"batches of {args.rows} rows, one connection, {args.duration:g} s:")
    for name, result in batches.items():
        print(f"  {name:8} {result['rps'] * args.rows:8.0f} rows/s  errors {result['errors']}")
    print(f"  ratio    {batches['bentoml']['rps'] / batches['mlflow']['rps']:.1f}x rows/s")
    print(f"(logs and temporary stores in {work})")


if __name__ == "__main__":
    asyncio.run(main())
