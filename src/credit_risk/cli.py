"""The ``credit-risk`` command: everything a user runs by hand, as subcommands.

An expected failure (bad settings, a missing file, MLflow trouble) prints one line on stderr
and exits with status 1 (:func:`credit_risk.errors.errors_as_one_line`, as the DVC stages do).
A subcommand may return another exit status (``drift``: 3 when the drift is significant).
Subcommands import what they need when they run, so ``credit-risk --help`` is quick.
"""

import argparse
import json
import sys
from pathlib import Path

from credit_risk.errors import errors_as_one_line, quiet_mlflow
from credit_risk.monitoring.window import day_or_moment, is_reversed
from credit_risk.registry.names import CHALLENGER_ALIAS
from credit_risk.serving.image import SERVICE_IMAGE


def import_command(args: argparse.Namespace) -> None:
    from credit_risk.serving.release import import_production

    print(import_production())


def containerize_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.store import project_root
    from credit_risk.serving.image import build_service_image, container_engine

    print("containerize: importing the registry's Production version", flush=True)
    import_command(args)
    print(build_service_image(project_root(), args.engine or container_engine(), args.tag))


def promote_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.promotion import promote_by_hand

    print(promote_by_hand(args.version, args.reason, args.override_gate))


def history_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.promotion import show_history

    print(show_history(args.json))


def status_command(args: argparse.Namespace) -> None:
    from credit_risk.serving.status import describe_status, release_status

    status = release_status()
    print(json.dumps(status, indent=2) if args.json else describe_status(status))


def log_location(args: argparse.Namespace):
    """The log a command reads: with ``--from-mlflow`` the one every service shipped to the
    tracking store (``MLFLOW_TRACKING_URI``, else the project's ``mlflow.db``), else LOG_DIR
    (by default where the service writes it)."""
    from credit_risk.serving.prediction_log import log_directory

    if args.from_mlflow:
        return shipped_log()
    return args.log_dir or log_directory()


def shipped_log():
    """The log shipped to the tracking store; one line if there is no store or it is down."""
    from credit_risk.monitoring.report import tracking_store
    from credit_risk.monitoring.shipped_log import ShippedLog

    uri = tracking_store()
    if uri is None:
        raise RuntimeError(
            "--from-mlflow: no MLflow tracking store (MLFLOW_TRACKING_URI is not set and there is "
            "no mlflow.db here)"
        )
    return ShippedLog(uri)


def drift_command(args: argparse.Namespace) -> int:
    from credit_risk.monitoring.report import drift_report

    message, exit_status = drift_report(log_location(args), args.since, args.until, args.output)
    print(message)
    return exit_status


def compare_command(args: argparse.Namespace) -> int:
    from credit_risk.monitoring.compare_report import compare_report

    message, exit_status = compare_report(
        args.challenger, log_location(args), args.since, args.until, args.output
    )
    print(message)
    return exit_status


def outcomes_command(args: argparse.Namespace) -> None:
    from credit_risk.monitoring.outcomes import take_in_outcomes
    from credit_risk.monitoring.report import tracking_store
    from credit_risk.serving.outcome_shipping import ship_now
    from credit_risk.serving.prediction_log import log_directory

    directory = args.log_dir or log_directory()
    shipped = shipped_log() if args.from_mlflow else None
    summary = take_in_outcomes(args.file, directory, shipped)
    print(f"{summary}; {ship_now(directory, tracking_store())}")


def performance_command(args: argparse.Namespace) -> int:
    from credit_risk.monitoring.performance_report import performance_report

    message, exit_status = performance_report(
        log_location(args), args.since, args.until, args.output
    )
    print(message)
    return exit_status


def training_data_command(args: argparse.Namespace) -> None:
    from credit_risk.monitoring.training_data import write_training_data

    print(write_training_data(log_location(args), args.output, args.since, args.until))


def keys_command(args: argparse.Namespace) -> None:
    from credit_risk.serving.api_keys import add_key, keys_file, read_keys, revoke_key

    path = keys_file(args.file)
    if args.action == "add":
        key = add_key(path, args.name)
        print(f"keys: added {args.name!r} to {path}; the key, shown only now:", file=sys.stderr)
        print(key)
    elif args.action == "revoke":
        revoke_key(path, args.name)
        print(f"keys: revoked {args.name!r} in {path}")
    else:
        for key in read_keys(path):
            print(f"{key.name}  added {key.added}")


def tracking_users_command(args: argparse.Namespace) -> None:
    from credit_risk.registry.store import project_root
    from credit_risk.registry.tracking_users import secrets_folder, set_up_users

    for line in set_up_users(project_root(), secrets_folder(args.secrets)):
        print(f"tracking-users: {line}")


LOG_DIR_HELP = (
    "prediction log directory (default: $CREDIT_RISK_PREDICTION_LOG, else monitoring/predictions, "
    "as the service resolves it)"
)
FROM_MLFLOW_HELP = (
    "read the log every service shipped to MLflow (every serving-v<N> run's chunks, each "
    "prediction once) and the outcomes shipped from any host, instead of LOG_DIR"
)


def add_log_dir(command: argparse.ArgumentParser) -> None:
    """LOG_DIR, resolved as the service resolves it, or ``--from-mlflow`` (not both)."""
    choice = command.add_mutually_exclusive_group()
    choice.add_argument("log_dir", nargs="?", type=Path, metavar="LOG_DIR", help=LOG_DIR_HELP)
    choice.add_argument("--from-mlflow", action="store_true", help=FROM_MLFLOW_HELP)


def add_window(command: argparse.ArgumentParser) -> None:
    """LOG_DIR or ``--from-mlflow``, ``--since`` and ``--until``, as ``drift`` and ``compare``
    take them."""
    add_log_dir(command)
    for option, which in (("--since", "first"), ("--until", "last")):
        command.add_argument(
            option, type=day_or_moment, metavar="DATE",
            help=f"{which} day (UTC, YYYY-MM-DD) or moment (YYYY-MM-DDTHH:MM:SS, UTC unless it "
            "has a zone) of predictions to include (default: all)",
        )  # fmt: skip


def challenger_reference(text: str) -> str:
    """A registry version number or an alias name (argparse type of ``compare``)."""
    if not text or not text.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"not a version number or alias: {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    """The command line: ``credit-risk {import,containerize,promote,history,status,drift,
    compare,outcomes,performance,training-data,keys,tracking-users}``."""
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
        "promote",
        help="make VERSION the Production version (alias and stage) by hand, recording who "
        "approved it ($CREDIT_RISK_APPROVER, else user@host), when and why",
    )
    promote.add_argument("version", type=int, metavar="VERSION")
    promote.add_argument("--reason", required=True, help="why (recorded in the history)")
    promote.add_argument(
        "--override-gate", action="store_true",
        help="promote a version the gate rejected (recorded as such)",
    )  # fmt: skip
    promote.set_defaults(handler=promote_command)
    history = commands.add_parser(
        "history", help="every change of Production (gate or by hand), newest first"
    )
    history.add_argument("--json", action="store_true", help="print the history as JSON")
    history.set_defaults(handler=history_command)
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
    add_window(drift)
    drift.add_argument(
        "--output", type=Path, default=Path("reports/drift"), metavar="DIR",
        help="where drift.html and drift.json go (default: %(default)s)",
    )  # fmt: skip
    drift.set_defaults(handler=drift_command)
    compare = commands.add_parser(
        "compare",
        help="parallel run: score the logged applicants with a challenger and report the swap "
        "sets against the champion's answers (exit 3 when the swap share is above "
        "compare.max_swap_share)",
    )
    compare.add_argument(
        "challenger", nargs="?", type=challenger_reference, default=CHALLENGER_ALIAS,
        metavar="CHALLENGER", help="registry version number or alias (default: %(default)s)",
    )  # fmt: skip
    add_window(compare)
    compare.add_argument(
        "--output", type=Path, default=Path("reports/compare"), metavar="DIR",
        help="where compare.html and compare.json go (default: %(default)s)",
    )  # fmt: skip
    compare.set_defaults(handler=compare_command)
    outcomes = commands.add_parser(
        "outcomes",
        help="take in observed outcomes (CSV: prediction_id, SeriousDlqin2yrs, observed_at) of "
        "logged predictions; a file with any bad row stores nothing, known ones are skipped",
    )
    outcomes.add_argument("file", type=Path, metavar="FILE.csv")
    outcomes.add_argument(
        "log_dir", nargs="?", type=Path, metavar="LOG_DIR",
        help=f"where the outcomes are stored, beside the log; {LOG_DIR_HELP}",
    )  # fmt: skip
    outcomes.add_argument(
        "--from-mlflow", action="store_true",
        help="look the ids up in the log every service shipped to MLflow (predictions logged "
        "on any host), and count the outcomes shipped from any host as known",
    )  # fmt: skip
    outcomes.set_defaults(handler=outcomes_command)
    performance = commands.add_parser(
        "performance",
        help="realized performance of each served version on the applicants whose outcomes "
        "are known (exit 3 when degraded against its test split)",
    )
    add_window(performance)
    performance.add_argument(
        "--output", type=Path, default=Path("reports/performance"), metavar="DIR",
        help="where performance.html and performance.json go (default: %(default)s)",
    )  # fmt: skip
    performance.set_defaults(handler=performance_command)
    training_data = commands.add_parser(
        "training-data",
        help="write the logged applicants that have outcomes as a Kaggle-format training CSV",
    )
    add_window(training_data)
    training_data.add_argument("--output", type=Path, required=True, metavar="FILE.csv")
    training_data.set_defaults(handler=training_data_command)
    keys = commands.add_parser(
        "keys",
        help="the scoring API's keys: add (prints the new key once, stores its hash), revoke, list",
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("add", "make a key named NAME: prints it once (stdout), stores its SHA-256"),
        ("revoke", "remove the key named NAME: the service refuses it within a second"),
        ("list", "the names of the keys and when each was added"),
    ):
        key_action = key_actions.add_parser(action, help=text)
        if action != "list":
            key_action.add_argument("name", metavar="NAME")
        key_action.add_argument(
            "--file", type=Path, metavar="PATH",
            help="the keys file (default: $CREDIT_RISK_API_KEYS_FILE)",
        )  # fmt: skip
    keys.set_defaults(handler=keys_command)
    tracking_users = commands.add_parser(
        "tracking-users",
        help="as the MLflow tracking server's admin (basic-auth app): the users trainer and "
        "api, their passwords and permissions; running it again changes nothing",
    )
    tracking_users.add_argument(
        "secrets", nargs="?", type=Path, metavar="DIR",
        help="the folder of the password files admin-password, trainer-password, api-password "
        "(and admin-password.previous to change the admin's) (default: "
        "$CREDIT_RISK_MLFLOW_SECRETS, else secrets/mlflow)",
    )  # fmt: skip
    tracking_users.set_defaults(handler=tracking_users_command)
    return main_parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``credit-risk`` console script."""
    command_line = parser()
    args = command_line.parse_args(argv)
    windowed = args.command in ("compare", "performance", "training-data")
    if windowed and is_reversed(args.since, args.until):
        command_line.error(
            f"--until {args.until.isoformat()} is before --since {args.since.isoformat()}"
        )
    quiet_mlflow()
    with errors_as_one_line(args.command):
        exit_status = args.handler(args)
    if exit_status:
        raise SystemExit(exit_status)
