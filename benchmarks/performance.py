"""Benchmark ``credit-risk performance``: wall time and peak memory for logs of growing size.

Writes logs of N records in the service's format, as ``benchmarks/drift.py`` does (the model
trained on the embedded synthetic data, 20,000 of its applicants scored as the service does,
spread over 30 days), and outcomes for 30 % of them (each applicant defaults with its predicted
probability, seeded), in the format ``credit-risk outcomes`` stores. Then runs the real command
on each log and prints its wall time and peak memory, e.g.::

    python benchmarks/performance.py                    # 250,000 and 1,000,000 records
    python benchmarks/performance.py --records 100000

With ``--from-mlflow`` each log and its outcomes are also shipped (by the service's shipper and
``credit-risk outcomes``' code) to a real ``mlflow server`` started for the run, and
``credit-risk performance --from-mlflow`` is measured too, with its ratio to the local run.
"""

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
from drift import PROJECT, measure, scored_applicants, write_log

from credit_risk.monitoring.outcomes import OUTCOMES_FILE, Outcome
from credit_risk.params import load_params
from credit_risk.serving.outcome_shipping import ship_outcomes
from credit_risk.serving.prediction_log import iter_records
from credit_risk.serving.shipping import Shipper

SHARE_WITH_OUTCOMES = 0.3


def write_outcomes(log: Path, seed: int = 0) -> int:
    """Outcomes for every third or so record of ``log``, drawn from its probabilities."""
    generator = np.random.default_rng(seed)
    written = 0
    with (log / OUTCOMES_FILE).open("wb") as stream:
        for record in iter_records(log):
            if generator.random() >= SHARE_WITH_OUTCOMES:
                continue
            defaulted = int(generator.random() < record["probability"])
            outcome = Outcome(record["prediction_id"], defaulted, "2027-06-30")
            stream.write(orjson.dumps(outcome.record()) + b"\n")
            written += 1
    return written


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, artifacts in ``folder``) on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
               str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with (folder / "server.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait()


def from_mlflow(folder: Path, log: Path, seconds: float) -> None:
    """Ship ``log`` and its outcomes to a fresh server; measure ``performance --from-mlflow``."""
    tracking = folder / f"tracking-{log.name}"
    tracking.mkdir()
    with mlflow_server(tracking) as url:
        started = time.monotonic()
        Shipper(log, url).ship_once()
        ship_outcomes(log, url)
        shipped = time.monotonic() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_TRACKING_URI"] = url
        command = ("performance", "--from-mlflow")
        remote, rss, tree, output = measure(folder, None, command, env)
    print(f"          --from-mlflow (shipped in {shipped:.0f} s): {remote:.1f} s "
          f"({remote / seconds:.1f}x the local run), peak RSS {rss:,.0f} MiB (command), "
          f"{tree:,.0f} MiB (with its workers)")  # fmt: skip
    print(f"          {output}")
    shutil.rmtree(tracking)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument(
        "--from-mlflow", action="store_true",
        help="also measure `performance --from-mlflow` on the log shipped to a real server",
    )  # fmt: skip
    args = parser.parse_args()
    params = load_params(PROJECT / "params.yaml")
    values, answers, _ = scored_applicants(params)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        shutil.copy(PROJECT / "params.yaml", folder / "params.yaml")
        print(f"load average {os.getloadavg()[0]:.1f} at the start")
        for records in args.records:
            log = folder / f"log-{records}"
            write_log(log, records, values, answers, params["serve"]["threshold"])
            outcomes = write_outcomes(log)
            size = sum(path.stat().st_size for path in log.iterdir()) / 2**20
            seconds, rss, _, output = measure(folder, log, ("performance",))
            print(f"{records:>9,} records, {outcomes:,} outcomes ({size:,.0f} MiB): "
                  f"{seconds:.1f} s, peak RSS {rss:,.0f} MiB")  # fmt: skip
            print(f"          {output}")
            if args.from_mlflow:
                from_mlflow(folder, log, seconds)
            shutil.rmtree(log)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
