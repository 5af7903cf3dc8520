"""The shipper in a process of its own, supervised by the service worker.

A shipping round parses every new line of the prediction log (tens of thousands every 30 s
under load) with the interpreter lock held; run as a thread of the worker it took that lock
from the requests for a fraction of a second each round. :class:`ShipperProcess` runs
:class:`~credit_risk.serving.shipping.Shipper` in a child process instead (``python -m
credit_risk.serving.shipping_process``), reads each round's progress from a pipe for
``/health``, and starts it again if it dies. The child exits as soon as its worker is gone
(the pipe on its standard input closes, even on ``SIGKILL``), so no shipper outlives its
service to hold the log directory's lock.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from credit_risk.serving.shipping import SHIP_INTERVAL_ENV, Shipper, shipping_status
from credit_risk.serving.shipping_state import retention

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
"""The folder holding this ``credit_risk`` package: the child imports the code its worker runs
(a bento's, an installed one), whatever its working directory."""


class ShipperProcess:
    """Starts the shipping process for a log directory and keeps it running."""

    def __init__(self, directory: Path, uri: str):
        self.directory, self.uri = directory, uri
        self.interval = float(os.environ.get(SHIP_INTERVAL_ENV) or 30)
        self.retention = retention()  # a bad setting fails the service's start, not the child
        self.progress = {"role": "starting", "error": None, "last_attempt": None}
        self.progress["last_success"] = None
        self.child: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="prediction-shipper", daemon=True
        )

    def start(self) -> None:
        self._supervisor.start()

    def stop(self) -> None:
        """End the shipping process and start no other (a service needs not: its exit ends
        the child)."""
        self._stopped.set()
        self._end_child()
        if self._supervisor.is_alive():
            self._supervisor.join()  # it returns once its child has exited

    def _end_child(self) -> None:
        """Close the child's standard input: its signal to exit."""
        child = self.child
        if child is not None and child.stdin is not None and not child.stdin.closed:
            child.stdin.close()

    def is_alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def status(self, model_version: str) -> dict:
        """The shipping part of ``/health``."""
        return shipping_status(self, self.progress, self.is_alive(), model_version)

    def _supervise(self) -> None:
        while not self._stopped.is_set():
            try:
                outcome = f"exited with status {self._run_child()}"
            except OSError as error:  # no process could be made (memory, process limits)
                outcome = f"could not be started: {error}"
            self.progress = self.progress | {
                "error": f"the shipping process {outcome}; starting it again in {self.interval:g} s"
            }
            self._stopped.wait(self.interval)

    def _run_child(self) -> int:
        """Run one shipping process until it exits, taking its progress reports."""
        reports, report_end = os.pipe()
        command = [sys.executable, "-m", __name__, str(self.directory)]
        command += ["--report-fd", str(report_end)]
        python_path = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
        try:
            self.child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,  # this end closes when this process ends, however
                # the tracking URI (it may hold a password) in the environment, not the command
                env=os.environ | {TRACKING_URI_ENV: self.uri, "PYTHONPATH": python_path},
                pass_fds=(report_end,),
            )
        except OSError:
            os.close(reports)
            raise
        finally:
            os.close(report_end)
        if self._stopped.is_set():  # stop() came while it was being started
            self._end_child()
        with os.fdopen(reports, "rb") as lines:
            for line in lines:
                if line.endswith(b"\n"):  # not the start of a report cut off by its death
                    self.progress = json.loads(line)
        return self.child.wait()


def _exit_when_parent_is_gone() -> None:
    sys.stdin.buffer.read()  # returns at end of file: the worker closed the pipe or died
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Ship a prediction log to MLflow (child).")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--report-fd", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal stops the worker, then this
    threading.Thread(target=_exit_when_parent_is_gone, daemon=True).start()
    with os.fdopen(args.report_fd, "w", buffering=1) as reports:
        shipper = Shipper(args.directory, os.environ[TRACKING_URI_ENV])
        shipper.run(lambda progress: reports.write(json.dumps(progress) + "\n"))


if __name__ == "__main__":
    main()
