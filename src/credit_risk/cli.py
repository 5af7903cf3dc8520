"""The ``credit-risk`` command: everything a user runs by hand, as subcommands.

An expected failure (bad settings, a missing file, MLflow trouble) prints one line on stderr
and exits with status 1 (:func:`credit_risk.errors.errors_as_one_line`, as the DVC stages do).
A subcommand may return another exit status (``drift``: 3 when the drift is significant).
Subcommands import what they need when they run, so ``credit-risk --help`` is quick.
"""

import argparse
import json
from datetime import date
from pathlib import Path

from credit_risk.errors import errors_as_one_line
from credit_risk.serving.image import SERVICE_IMAGE


def import_command(args: argparse.Namespace) -> None:
    from credit_risk.serving.release import import_production

    print(import_production())


def containerize_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.store import project_root
    from credit_risk.serving.image import build_service_image, container_engine

    import_command(args)
    print(build_service_image(project_root(), args.engine or container_engine(), args.tag))


def promote_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.promotion import promote_by_hand

    print(promote_by_hand(args.version))


def status_command(args: argparse.Namespace) -> None:
    from credit_risk.serving.status import describe_status, release_status

    status = release_status()
    print(json.dumps(status, indent=2) if args.json else describe_status(status))


def drift_command(args: argparse.Namespace) -> int:
    from credit_risk.monitoring.report import drift_report
    from credit_risk.serving.prediction_log import log_directory

    message, exit_status = drift_report(
        args.log_dir or log_directory(), args.since, args.until, args.output
    )
    print(message)
    return exit_status


def parser() -> argparse.ArgumentParser:
    """The command line: ``credit-risk {import,containerize,promote,status,drift}``."""
    main_parser = argparse.ArgumentParser(
        prog="credit-risk", description="Credit-risk model registry and serving commands."
    )
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    importer = commands.add_parser(
        "import", help="copy the registry's Production version into the BentoML model store"
    )
    importer.set_defaults(handler=import_command)
    containerize = commands.add_parser(
        "containerize",
        help="import, then build the service image (bento + `bentoml containerize`) for compose",
    )
    containerize.add_argument(
        "--engine", choices=["docker", "podman"], help="default: the first that works"
    )
    containerize.add_argument(
        "--tag", default=SERVICE_IMAGE, help="image tag (default: %(default)s)"
    )
    containerize.set_defaults(handler=containerize_command)
    promote = commands.add_parser(
        "promote", help="make VERSION the Production version (alias and stage), by hand"
    )
    promote.add_argument("version", type=int, metavar="VERSION")
    promote.set_defaults(handler=promote_command)
    status = commands.add_parser(
        "status", help="what the registry and the BentoML store hold, and whether they agree"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=status_command)
    drift = commands.add_parser(
        "drift",
        help="report how far the logged applicants and answers drifted from the served model's "
        "training reference (exit 3 when significantly)",
    )
    drift.add_argument(
        "log_dir", nargs="?", type=Path, metavar="LOG_DIR",
        help="prediction log directory (default: $CREDIT_RISK_PREDICTION_LOG, else "
        "monitoring/predictions, as the service resolves it)",
    )  # fmt: skip
    for option, which in (("--since", "first"), ("--until", "last")):
        drift.add_argument(
            option, type=date.fromisoformat, metavar="DATE",
            help=f"{which} day (UTC, YYYY-MM-DD) of predictions to include (default: all)",
        )  # fmt: skip
    drift.add_argument(
        "--output", type=Path, default=Path("reports/drift"), metavar="DIR",
        help="where drift.html and drift.json go (default: %(default)s)",
    )  # fmt: skip
    drift.set_defaults(handler=drift_command)
    return main_parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``credit-risk`` console script."""
    args = parser().parse_args(argv)
    with errors_as_one_line(args.command):
        exit_status = args.handler(args)
    if exit_status:
        raise SystemExit(exit_status)
