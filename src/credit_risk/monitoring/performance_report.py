"""``credit-risk performance``: each served version's realized performance, as files and in MLflow.

The log and the outcomes (the ones ``credit-risk outcomes`` took in) are a log directory's, or
with ``--from-mlflow`` the ones every host shipped (:mod:`credit_risk.monitoring.shipped_log`).
Each version found in the log's
window is compared with its test-split metrics (``roc_auc``, ``calibration_error`` of its
training run, when the registry has the version). The report goes to ``performance.json`` and
``performance.html``; each version's figures become metrics, and both files artifacts (under
``performance/<time>/``), of its run ``serving-v<version>``, when there is a tracking store.
Exit status 3 when a version with at least ``performance.min_outcomes`` outcomes is degraded:
its ROC AUC more than ``performance.max_auc_drop`` below its test AUC, or its calibration
error above ``register.max_calibration_error``.
"""

import json
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from credit_risk.monitoring.log_source import LogSource, as_log_source
from credit_risk.monitoring.performance import PerformanceError, read_cohorts, version_summary
from credit_risk.monitoring.performance_html import render
from credit_risk.monitoring.report import tracking_store
from credit_risk.params import load_params
from credit_risk.registry.names import MODEL_NAME
from credit_risk.registry.store import connect, project_root, redact, tracking_errors

DEGRADED_EXIT = 3
ARTIFACT_DIR = "performance"
METRICS = ("roc_auc", "roc_auc_low", "roc_auc_high", "gini", "ks", "calibration_error")


def performance_limits(params: dict) -> dict:
    """The settings the judgement uses, checked."""
    section = params["performance"]
    limits = {
        "min_outcomes": section["min_outcomes"],
        "max_auc_drop": section["max_auc_drop"],
        "max_calibration_error": params["register"]["max_calibration_error"],
        "calibration_bins": params["train"]["calibration_bins"],
    }
    count = limits["min_outcomes"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            f"params.yaml: performance.min_outcomes must be a whole number >= 1, got {count!r}"
        )
    drop = limits["max_auc_drop"]
    if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= drop <= 1:
        raise ValueError(
            f"params.yaml: performance.max_auc_drop must be a number from 0 to 1, got {drop!r}"
        )
    return limits


def held_out_metrics(client, uri: str | None, version: str) -> dict | None:
    """The version's test-split ROC AUC and calibration error from its training run."""
    from credit_risk.registry.lookups import registry_version

    if client is None or not version.isdigit():
        return None
    with tracking_errors(uri):
        registered = registry_version(client, version)
        if registered is None:
            return None
        metrics = client.get_run(registered.run_id).data.metrics
    if "roc_auc" not in metrics or "calibration_error" not in metrics:
        return None
    return {"roc_auc": metrics["roc_auc"], "calibration_error": metrics["calibration_error"],
            "run_id": registered.run_id}  # fmt: skip


def performance_report(
    location: Path | LogSource, since: date | None, until: date | None, output: Path
) -> tuple[str, int]:
    """Measure the log at ``location`` (a directory or the shipped log), write
    ``output/performance.{json,html}``, log to MLflow; a summary and exit status."""
    limits = performance_limits(load_params(project_root() / "params.yaml"))
    log = as_log_source(location)
    outcomes = log.outcomes()
    if not outcomes:
        raise PerformanceError(log.no_outcomes())
    cohorts = read_cohorts(log, outcomes, since, until)
    if not cohorts.versions:
        raise PerformanceError(f"{log}: no logged predictions in the window")
    uri = tracking_store()
    client = connect(uri) if uri else None
    versions = [
        version_summary(version, cohort, held_out_metrics(client, uri, version), limits)
        for version, cohort in sorted(cohorts.versions.items(), key=lambda item: item[0])
    ]
    report = {
        "model_name": MODEL_NAME,
        **log.report_fields(),
        "window": {"since": since and since.isoformat(), "until": until and until.isoformat()},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "outcomes_known": len(outcomes),
        "limits": limits,
        "skipped": {
            "corrupt_lines": cohorts.corrupt_lines,
            "outside_window": cohorts.outside_window,
            "repeated_prediction_ids": cohorts.repeated_ids,
            "conflicting_outcomes": log.conflicting_outcomes,
        },
        "versions": versions,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "performance.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (output / "performance.html").write_text(render(report), encoding="utf-8")
    logged = log_to_mlflow(client, uri, report, output)
    lines = "; ".join(describe(entry) for entry in versions)
    degraded = any(entry["status"] == "degraded" for entry in versions)
    message = f"performance: {lines}; report in {output / 'performance.html'}; {logged}"
    return message, DEGRADED_EXIT if degraded else 0


def describe(entry: dict) -> str:
    """``version 1: 3,000 of 10,000 decisions with outcomes, ROC AUC 0.8123 (95% CI …): within``."""
    text = (
        f"version {entry['model_version']}: {entry['with_outcome']:,} of {entry['decisions']:,} "
        "decisions with outcomes"
    )
    realized, test = entry["realized"], entry["test"]
    if realized:
        text += (
            f", ROC AUC {realized['roc_auc']:.4f} (95% CI {realized['roc_auc_low']:.4f} to "
            f"{realized['roc_auc_high']:.4f}; test {test['roc_auc']:.4f})"
            if test
            else f", ROC AUC {realized['roc_auc']:.4f} (95% CI {realized['roc_auc_low']:.4f} to "
            f"{realized['roc_auc_high']:.4f}; no test metrics)"
        )
        text += f", calibration error {realized['calibration_error']:.4f}"
    text += f": {entry['status']}"
    return text + (f" ({'; '.join(entry['why'])})" if entry["status"] == "degraded" else "")


def log_to_mlflow(client, uri: str | None, report: dict, output: Path) -> str:
    """Each version's figures as metrics, and the files as artifacts, of ``serving-v<N>``."""
    from mlflow.entities import Metric

    from credit_risk.serving.shipping import serving_run

    if client is None:
        return "not logged to MLflow (no MLFLOW_TRACKING_URI and no mlflow.db here)"
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    runs = []
    with tracking_errors(uri), tempfile.TemporaryDirectory() as folder:
        for name in ("performance.json", "performance.html"):
            (Path(folder) / name).write_bytes((output / name).read_bytes())
        for entry in report["versions"]:
            metrics = {"performance_outcomes": entry["with_outcome"]}
            metrics |= {"performance_decisions": entry["decisions"]}
            if entry["realized"]:
                metrics |= {f"performance_{key}": entry["realized"][key] for key in METRICS}
            run_id = serving_run(client, uri, entry["model_version"])
            batch = [Metric(k, v, int(now * 1000), int(now)) for k, v in metrics.items()]
            client.log_batch(run_id, metrics=batch)
            client.log_artifacts(run_id, folder, artifact_path=f"{ARTIFACT_DIR}/{stamp}")
            runs.append(f"serving-v{entry['model_version']}")
    return f"logged to MLflow runs {', '.join(runs)} at {redact(uri)}"
