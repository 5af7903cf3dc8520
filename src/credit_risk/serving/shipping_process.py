"""The shipper in a process of its own, supervised by one worker of the service.

A shipping round parses every new line of the prediction log (tens of thousands every 30 s
under load) with the interpreter lock held; run as a thread of a worker it took that lock
from the requests for a fraction of a second each round. :class:`ShipperProcess` runs
:class:`~credit_risk.serving.shipping.Shipper` in a child process instead (``python -m
credit_risk.serving.shipping_process``) and starts it again if it dies. One worker starts it
for the whole log directory (the workers' files are in one directory); every worker reads its
progress from ``shipping-progress.json`` there for ``/health``. The child exits as soon as its
worker is gone (the pipe on its standard input closes, even on ``SIGKILL``), so no shipper
outlives its service to hold the log directory's lock. A child that finds the lock held (a
second service on the same directory) waits without importing MLflow: a few MB.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from credit_risk.serving.shipping import SHIP_INTERVAL_ENV, Shipper, lock_if_free, shipping_status
from credit_risk.serving.shipping_state import read_progress, retention, save_progress

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
"""The folder holding this ``credit_risk`` package: the child imports the code its worker runs
(a bento's, an installed one), whatever its working directory."""
NOT_YET = {"role": "starting", "error": None, "last_attempt": None, "last_success": None}


class ShipperProcess:
    """The shipping process of a log directory: started and kept running by :meth:`start`
    (in one worker); its :meth:`status` read in every worker."""

    def __init__(self, directory: Path, uri: str):
        self.directory, self.uri = directory, uri
        self.interval = float(os.environ.get(SHIP_INTERVAL_ENV) or 30)
        self.retention = retention()  # a bad setting fails the service's start, not the child
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
        """Whether the child this process started runs."""
        return self.child is not None and self.child.poll() is None

    def status(self, model_version: str) -> dict:
        """The shipping part of ``/health``, as the directory's shipper last reported it."""
        progress = read_progress(self.directory) or NOT_YET
        return shipping_status(self, progress, _running(progress.get("pid")), model_version)

    def _supervise(self) -> None:
        while not self._stopped.is_set():
            try:
                outcome = f"exited with status {self._run_child()}"
            except OSError as error:  # no process could be made (memory, process limits)
                outcome = f"could not be started: {error}"
            if not self._stopped.is_set():
                self._report_failure(outcome)
            self._stopped.wait(self.interval)

    def _report_failure(self, outcome: str) -> None:
        """Say in the progress file that the shipping process is gone, unless another process
        ships the directory meanwhile (holds its lock)."""
        error = f"the shipping process {outcome}; starting it again in {self.interval:g} s"
        try:
            with lock_if_free(self.directory) as free:
                if free:
                    gone = {"role": "restarting", "error": error, "pid": None}
                    save_progress(self.directory, (read_progress(self.directory) or NOT_YET) | gone)
        except OSError:
            pass  # the directory itself is failing: the prediction log reports that

    def _run_child(self) -> int:
        """Run one shipping process until it exits."""
        command = [sys.executable, "-m", __name__, str(self.directory)]
        python_path = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
        self.child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,  # this end closes when this process ends, however
            # the tracking URI (it may hold a password) in the environment, not the command
            env=os.environ | {TRACKING_URI_ENV: self.uri, "PYTHONPATH": python_path},
        )
        if self._stopped.is_set():  # stop() came while it was being started
            self._end_child()
        return self.child.wait()


def _running(pid: int | None) -> bool:
    """Whether process ``pid`` exists (the shipping process is reaped by its supervisor)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _exit_when_parent_is_gone() -> None:
    sys.stdin.buffer.read()  # returns at end of file: the worker closed the pipe or died
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Ship a prediction log to MLflow (child).")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal stops the worker, then this
    threading.Thread(target=_exit_when_parent_is_gone, daemon=True).start()
    Shipper(args.directory, os.environ[TRACKING_URI_ENV]).run()


if __name__ == "__main__":
    main()
