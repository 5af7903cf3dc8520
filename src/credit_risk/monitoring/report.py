"""``credit-risk drift``: the served model's drift report, as files and in MLflow.

The served model is the registry's Production version (services follow it); its reference
profile is the one in the imported BentoML model when that is the Production version (checked
against the SHA256 recorded at import), else the one of its training run. Without a tracking
store, the newest import is measured. The report goes to
``drift.json`` and ``drift.html``; its PSI values become metrics and both files artifacts of
the run ``serving-v<version>`` the prediction log is shipped to, when there is a tracking store.
"""

import json
import os
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from credit_risk.ml.profile import read_profile
from credit_risk.monitoring.drift import DriftError, measure_drift, summary
from credit_risk.monitoring.log_source import LogSource, as_log_source
from credit_risk.monitoring.report_html import render
from credit_risk.monitoring.window import is_reversed
from credit_risk.params import load_params
from credit_risk.registry.lookups import production_version
from credit_risk.registry.names import MODEL_NAME, PRODUCTION_ALIAS, PRODUCTION_STAGE
from credit_risk.registry.store import (
    connect,
    embedded_tracking_uri,
    project_root,
    redact,
    tracking_errors,
)
from credit_risk.serving.release import (
    ServedModel,
    download_profile,
    latest_import,
    registry_record,
    served_profile,
    version_key,
)

SIGNIFICANT_EXIT = 3
"""Exit status when some PSI is above ``drift.psi_significant``."""
ARTIFACT_DIR = "drift"


def drift_thresholds(params: dict) -> dict[str, float]:
    """``drift.psi_watch`` and ``drift.psi_significant`` of ``params.yaml``, checked."""
    section = params["drift"]
    thresholds = {key: section[key] for key in ("psi_watch", "psi_significant")}
    values = thresholds.values()
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not numbers or not 0 < thresholds["psi_watch"] < thresholds["psi_significant"]:
        raise ValueError(
            "params.yaml: drift.psi_watch and drift.psi_significant must be numbers with "
            f"0 < psi_watch < psi_significant, got {thresholds}"
        )
    return {key: float(value) for key, value in thresholds.items()}


def drift_report(
    location: Path | LogSource, since: date | None, until: date | None, output: Path
) -> tuple[str, int]:
    """Measure the log at ``location`` (a directory or the shipped log), write
    ``output/drift.{json,html}``, log to MLflow; a summary and exit status."""
    if is_reversed(since, until):
        raise DriftError(f"--until {until.isoformat()} is before --since {since.isoformat()}")
    thresholds = drift_thresholds(load_params(project_root() / "params.yaml"))
    served, profile, source = measured_model()
    log = as_log_source(location)
    tally = measure_drift(log, profile, served.model_version, since, until)
    measured = summary(tally, thresholds, served.decision_threshold)
    days = [day["day"] for day in measured["daily"]]
    report = {
        "model": {
            "name": served.model_name,
            "version": served.model_version,
            "run_id": served.run_id,
            "reference_from": source,
            "reference_profile_sha256": served.reference_profile_sha256,
        },
        **log.report_fields(),
        "window": report_window(since, until, days),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    } | measured
    output.mkdir(parents=True, exist_ok=True)
    (output / "drift.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (output / "drift.html").write_text(render(report), encoding="utf-8")
    logged = log_to_mlflow(report, output, served)
    compared = {**report["features"], "probability": report["probability"]}
    compared["score"] = report["score"]
    significant = [name for name, result in compared.items() if result["status"] == "significant"]
    corrupt = report["skipped"]["corrupt_lines"]
    message = (
        f"drift: {report['records']} predictions of {served.model_name} version "
        f"{served.model_version} ({days[0]} to {days[-1]}): {report['status']}"
        + (
            f" (PSI above {thresholds['psi_significant']:g}: {', '.join(significant)})"
            if significant
            else ""
        )  # fmt: skip
        + (f"; {corrupt} torn or corrupt lines skipped" if corrupt else "")
        + f"; report in {output / 'drift.html'}; {logged}"
    )
    return message, SIGNIFICANT_EXIT if significant else 0


def measured_model() -> tuple[ServedModel, dict, str]:
    """The version whose predictions are measured, its reference profile and where that came
    from: the registry's Production version (the one services serve: they follow it), its
    profile taken from the import when the import is that version, else from its training run;
    the newest import when there is no tracking store or no Production version."""
    model = latest_import()
    imported = ServedModel.of(model) if model is not None else None
    uri = tracking_store()
    production = None
    if uri is not None:
        client = connect(uri)
        with tracking_errors(uri):
            production = production_version(client)
    if production is not None and (imported is None or version_key(production) != imported.key()):
        served = registry_record(client, uri, production, PRODUCTION_STAGE, PRODUCTION_ALIAS)
        with tempfile.TemporaryDirectory() as folder:
            path = download_profile(client, uri, production.run_id, Path(folder))
            if path is None:
                raise DriftError(
                    f"{MODEL_NAME} version {served.model_version} (Production) has no reference "
                    "profile: its training run was logged before profiles existed; run `dvc repro`"
                )
            return served, read_profile(path), f"training run {production.run_id}"
    if model is None:
        raise DriftError("the BentoML store has no imported model: run `credit-risk import`")
    return imported, served_profile(model, imported), f"BentoML model {model.tag}"


def tracking_store() -> str | None:
    """``MLFLOW_TRACKING_URI``, else the project's embedded store if it exists, else None."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = project_root()
    return embedded_tracking_uri(root) if (root / "mlflow.db").exists() else None


def log_to_mlflow(report: dict, output: Path, served: ServedModel) -> str:
    """PSI values as metrics and the report files as artifacts of ``serving-v<version>``."""
    from mlflow.entities import Metric

    from credit_risk.serving.shipping import serving_run

    uri = tracking_store()
    if uri is None:
        return "not logged to MLflow (no MLFLOW_TRACKING_URI and no mlflow.db here)"
    client = connect(uri)
    version = served.model_version
    metrics = {f"drift_psi_{name}": r["psi"] for name, r in report["features"].items()}
    metrics |= {
        "drift_psi_probability": report["probability"]["psi"],
        "drift_psi_score": report["score"]["psi"],
        "drift_records": report["records"],
        "drift_decline_rate": report["decline_rate"]["current"],
    }
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    with tracking_errors(uri):
        run_id = serving_run(client, uri, version)
        step = int(now)
        batch = [Metric(key, value, int(now * 1000), step) for key, value in metrics.items()]
        client.log_batch(run_id, metrics=batch)
        with tempfile.TemporaryDirectory() as folder:
            for name in ("drift.json", "drift.html"):
                (Path(folder) / name).write_bytes((output / name).read_bytes())
            client.log_artifacts(run_id, folder, artifact_path=f"{ARTIFACT_DIR}/{stamp}")
    return f"logged to MLflow run serving-v{version} ({run_id}) at {redact(uri)}"


def report_window(since, until, days: list[str]) -> dict:
    """The report's window: the days asked for (None: open) and the first and last day found."""
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "first_day": days[0],
        "last_day": days[-1],
    }
