"""``credit-risk compare``: the parallel run's swap-set report, as files and in MLflow.

The challenger is a registry version (number or alias), its model file downloaded and verified
as ``credit-risk import`` does (skops only, the registered SHA256, trusted types); its
threshold and score scale are its registry tags. The champion is the Production version: its
answers are the log's records of that version (others are counted and named, not used). The
report goes to ``compare.json`` and ``compare.html``; its figures become metrics and both
files artifacts (under ``compare/<time>/``) of the challenger's training run.
"""

import json
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from credit_risk.monitoring.compare import Challenger, SwapTally, summary
from credit_risk.monitoring.compare_html import render
from credit_risk.monitoring.drift import read_log
from credit_risk.monitoring.log_source import LogSource, as_log_source
from credit_risk.monitoring.report import report_window, tracking_store
from credit_risk.params import load_params
from credit_risk.registry.names import CHALLENGER_ALIAS, MODEL_NAME, PRODUCTION_ALIAS
from credit_risk.registry.store import connect, project_root, redact, tracking_errors
from credit_risk.serving.release import ServedModel, download_verified, registry_record

ABOVE_EXIT = 3
"""Exit status when the swap share is above ``compare.max_swap_share``."""
ARTIFACT_DIR = "compare"
DEFAULT_CHALLENGER = CHALLENGER_ALIAS


class CompareError(RuntimeError):
    """Nothing to compare: no tracking store, no champion or no challenger."""


def max_swap_share(params: dict) -> float:
    """``compare.max_swap_share`` of ``params.yaml``, checked (a share from 0 to 1)."""
    value = params["compare"]["max_swap_share"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(
            f"params.yaml: compare.max_swap_share must be a number from 0 to 1, got {value!r}"
        )
    return float(value)


def registry_model(client, uri: str, reference: str, role: str) -> ServedModel:
    """The registry record of the version ``reference`` names; :class:`CompareError` if none."""
    from credit_risk.registry.lookups import registry_version

    with tracking_errors(uri):
        version = registry_version(client, reference)
    if version is None:
        named = f"version {reference}" if reference.isdigit() else f"alias @{reference}"
        raise CompareError(f"no {role}: {MODEL_NAME} has no {named} in MLflow at {redact(uri)}")
    aliases = ",".join(version.aliases)
    return registry_record(client, uri, version, version.current_stage, aliases)


def load_challenger(uri: str, record: ServedModel) -> Challenger:
    """The challenger's model, verified as for serving, with its threshold and score scale."""
    from credit_risk.ml.model_file import load_model
    from credit_risk.ml.scorecard import ScoreScale

    with tempfile.TemporaryDirectory() as folder:
        model = load_model(download_verified(uri, record, Path(folder)))
    return Challenger.of(model, ScoreScale(**record.score_scale), record.decision_threshold)


def model_entry(record: ServedModel) -> dict:
    """What the report says about a model."""
    fields = ("model_name", "model_version", "model_stage", "alias", "run_id", "model_sha256")
    return {name: getattr(record, name) for name in fields} | {
        "decision_threshold": record.decision_threshold,
        "score_scale": record.score_scale,
    }


def compare_report(
    reference: str, location: Path | LogSource, since: date | None, until: date | None,
    output: Path,
) -> tuple[str, int]:  # fmt: skip
    """Compare on the log at ``location`` (a directory or the shipped log), write
    ``output/compare.{json,html}``, log to MLflow; a summary, exit status."""
    limit = max_swap_share(load_params(project_root() / "params.yaml"))
    uri = tracking_store()
    if uri is None:
        raise CompareError(
            "no MLflow tracking store (MLFLOW_TRACKING_URI is not set and there is no mlflow.db "
            "here): the challenger is a registry version"
        )
    client = connect(uri)
    champion = registry_model(client, uri, PRODUCTION_ALIAS, "champion (Production version)")
    challenger = registry_model(client, uri, reference, "challenger")
    scoring = load_challenger(uri, challenger)
    scales = (champion.score_scale, challenger.score_scale)
    low = int(min(scale["min_points"] for scale in scales))
    high = int(max(scale["max_points"] for scale in scales))
    arguments = (scoring, champion.model_version, since, until, low, high)
    log = as_log_source(location)
    tally = read_log(log, SwapTally, *arguments)
    days = sorted(tally.days)
    report = {
        "champion": model_entry(champion),
        "challenger": model_entry(challenger),
        **log.report_fields(),
        "window": report_window(since, until, days),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    } | summary(tally, limit)
    output.mkdir(parents=True, exist_ok=True)
    (output / "compare.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (output / "compare.html").write_text(render(report), encoding="utf-8")
    logged = log_to_mlflow(client, uri, report, output, challenger)
    swaps, rate = report["swap_sets"], report["approval_rate"]
    message = (
        f"compare: challenger {MODEL_NAME} version {challenger.model_version} against champion "
        f"version {champion.model_version} on {report['records']} logged applicants "
        f"({days[0]} to {days[-1]}): swap share {report['swap_share']:.2%} (swap-ins "
        f"{swaps['swap_in']['count']}, swap-outs {swaps['swap_out']['count']}) "
        f"{'within' if report['status'] == 'within' else 'above'} compare.max_swap_share "
        f"{limit:g}; approval rate {rate['champion']:.2%} -> {rate['challenger']:.2%}; "
        f"report in {output / 'compare.html'}; {logged}"
    )
    return message, 0 if report["status"] == "within" else ABOVE_EXIT


def log_to_mlflow(client, uri: str, report: dict, output: Path, challenger: ServedModel) -> str:
    """The figures as metrics and the files as artifacts of the challenger's training run."""
    from mlflow.entities import Metric

    swaps, shift = report["swap_sets"], report["score_shift"]
    metrics = {f"compare_{cell}_share": entry["share"] for cell, entry in swaps.items()}
    metrics |= {
        "compare_records": report["records"],
        "compare_swap_share": report["swap_share"],
        "compare_approval_rate_champion": report["approval_rate"]["champion"],
        "compare_approval_rate_challenger": report["approval_rate"]["challenger"],
        "compare_score_psi": shift["psi"],
        "compare_mean_score_change": shift["mean_change"],
    }
    if shift["spearman_probability"] is not None:
        metrics["compare_spearman_probability"] = shift["spearman_probability"]
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = challenger.run_id
    with tracking_errors(uri):
        batch = [Metric(key, value, int(now * 1000), int(now)) for key, value in metrics.items()]
        client.log_batch(run_id, metrics=batch)
        with tempfile.TemporaryDirectory() as folder:
            for name in ("compare.json", "compare.html"):
                (Path(folder) / name).write_bytes((output / name).read_bytes())
            client.log_artifacts(run_id, folder, artifact_path=f"{ARTIFACT_DIR}/{stamp}")
    return (
        f"logged to MLflow run {run_id} ({MODEL_NAME} version {challenger.model_version}) at "
        f"{redact(uri)}"
    )
