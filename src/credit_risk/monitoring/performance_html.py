"""The realized-performance report as one self-contained HTML page (tables and inline SVG, no
scripts), in the style of the drift report: per served version its ranking against its test
split, predicted against observed default rates by score band, and by month of application."""

from html import escape

from credit_risk.monitoring.log_source import log_description
from credit_risk.monitoring.report_html import STYLE, _percent, histogram

STATUS_COLORS = {"within": "#2e7d32", "degraded": "#c62828", "too few outcomes": "#7a8ca3"}


def _rate(value: float | None) -> str:
    return "—" if value is None else _percent(value)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def ranking_table(entry: dict) -> str:
    """Realized figures beside the test split's."""
    realized, test = entry["realized"] or {}, entry["test"] or {}
    rows = [
        ("ROC AUC", _number(realized.get("roc_auc")), _number(test.get("roc_auc"))),
        ("95 % interval", f"{_number(realized.get('roc_auc_low'))} to "
         f"{_number(realized.get('roc_auc_high'))}", ""),
        ("Gini", _number(realized.get("gini")), ""),
        ("KS", _number(realized.get("ks")), ""),
        ("calibration error", _number(realized.get("calibration_error")),
         _number(test.get("calibration_error"))),
    ]  # fmt: skip
    body = "".join(f"<tr><td>{name}</td><td>{a}</td><td>{b}</td></tr>" for name, a, b in rows)
    return f"<table><tr><th></th><th>realized</th><th>test split</th></tr>{body}</table>"


def rates_table(rows: list[dict], first: str, key: str) -> str:
    """Decisions, defaults and the predicted and observed default rates of ``rows``."""
    body = "".join(
        f"<tr><td>{escape(str(row[key]))}</td><td>{row['decisions']:,}</td>"
        f"<td>{row['defaults']:,}</td><td>{_rate(row['predicted_default_rate'])}</td>"
        f"<td>{_rate(row['observed_default_rate'])}</td></tr>"
        for row in rows
    )
    return (
        f"<table><tr><th>{first}</th><th>decisions with outcomes</th><th>defaults</th>"
        f"<th>predicted default rate</th><th>observed default rate</th></tr>{body}</table>"
    )


def version_section(entry: dict) -> str:
    status = entry["status"]
    why = "".join(f"<li>{escape(reason)}</li>" for reason in entry["why"])
    bands = entry["score_bands"]
    chart = (
        histogram(
            [band["scores"] for band in bands],
            [band["predicted_default_rate"] for band in bands],
            [band["observed_default_rate"] for band in bands],
            ("predicted default rate", "observed default rate"),
        )
        if bands
        else ""
    )
    return f"""<h2>Version {escape(entry["model_version"])} <span class="badge" \
style="background:{STATUS_COLORS[status]}">{escape(status)}</span></h2>
<ul>{why}</ul>
<p class="meta">{entry["decisions"]:,} decisions in the window: {entry["with_outcome"]:,} with an \
outcome ({entry["defaults"]:,} defaults, {_rate(entry["default_rate"])}), \
{entry["without_outcome"]:,} without one yet.</p>
<div class="grid"><div class="card"><h3>Ranking</h3>{ranking_table(entry)}</div>
<div class="card"><h3>Calibration by score band</h3>{chart}</div></div>
<h3>Score bands (equal-sized groups by predicted probability, best scores first)</h3>
{rates_table(bands, "scores", "scores")}
<h3>By month of application</h3>
{rates_table(entry["by_month"], "month", "month")}"""


def render(report: dict) -> str:
    """The whole page for a ``performance.json`` report."""
    limits, window, skipped = report["limits"], report["window"], report["skipped"]
    title = f"Realized performance of {escape(report['model_name'])}"
    sections = "\n".join(version_section(entry) for entry in report["versions"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style>\
</head><body>
<h1>{title}</h1>
<p class="meta">Logged decisions in {escape(log_description(report))} (window: \
{escape(window["since"] or "start")} to {escape(window["until"] or "now")}) whose outcomes are \
known ({report["outcomes_known"]:,} outcomes taken in). A version is degraded, with at least \
{limits["min_outcomes"]:,} outcomes, when its ROC AUC is more than {limits["max_auc_drop"]:g} \
below its test split's or its calibration error above {limits["max_calibration_error"]:g}. \
Skipped: {skipped["corrupt_lines"]} torn or corrupt lines, {skipped["outside_window"]} records \
outside the window. Generated {escape(report["generated_at"])}.</p>
{sections}
</body></html>
"""
