"""The drift report as one self-contained HTML page: tables and inline SVG charts, no scripts.

A risk analyst opens ``drift.html`` in a browser, offline: the PSI of every feature, the
probability and the score against the thresholds, the decline rate and mean probability by day,
reason-code frequencies, and the reference and current distribution of everything compared.
"""

from html import escape

from credit_risk.monitoring.log_source import log_description

COLORS = {"stable": "#2e7d32", "watch": "#ef8f00", "significant": "#c62828"}
REFERENCE, CURRENT = "#7a8ca3", "#f08a24"
STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1240px}
h1{margin-bottom:4px}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:18px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px}
.card h3{font-size:15px;max-width:560px}.meta{color:#555}
.badge{color:#fff;border-radius:4px;padding:2px 8px;font-weight:600}
svg text{font-size:11px;fill:#333}"""


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLORS[status]}">{status}</span>'


def _percent(share: float) -> str:
    return f"{100 * share:.2f} %"


def _svg(width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(body)}</svg>'
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", rotate: bool = False) -> str:
    turn = f' transform="rotate(-50 {x:.1f} {y:.1f})"' if rotate else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{turn}>{escape(text)}</text>'


def histogram(
    labels: list[str],
    reference: list[float],
    current: list[float],
    legend: tuple[str, str] = ("reference (training split)", "current (prediction log)"),
) -> str:
    """Reference and current shares per bin, side by side (``legend``: their names)."""
    width, height, left, top, bottom = 560, 290, 64, 26, 104
    plot_w, plot_h = width - left - 10, height - top - bottom
    top_share = max(max(reference), max(current), 0.01) * 1.1
    step = plot_w / len(labels)
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
            'stroke="#999"/>', _text(left - 4, top + 4, _percent(top_share), "end")]  # fmt: skip
    for i, label in enumerate(labels):
        for j, (share, color) in enumerate(((reference[i], REFERENCE), (current[i], CURRENT))):
            bar = plot_h * share / top_share
            x = left + i * step + step * (0.1 + 0.4 * j)
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - bar:.1f}" width="{step * 0.4:.1f}" '
                f'height="{bar:.1f}" fill="{color}"><title>{escape(label)}: '
                f"{_percent(share)}</title></rect>"
            )
        body.append(_text(left + (i + 0.5) * step, top + plot_h + 14, label, "end", rotate=True))
    body += [
        f'<rect x="{left}" y="4" width="10" height="10" fill="{REFERENCE}"/>',
        _text(left + 14, 13, legend[0], "start"),
        f'<rect x="{left + 190}" y="4" width="10" height="10" fill="{CURRENT}"/>',
        _text(left + 204, 13, legend[1], "start"),
    ]
    return _svg(width, height, body)


def psi_chart(rows: list[tuple[str, dict]], thresholds: dict) -> str:
    """One horizontal bar per compared quantity, coloured by status, with threshold lines."""
    left, bar_h, width = 290, 20, 900
    plot_w = width - left - 70
    top_psi = max([thresholds["psi_significant"] * 1.6, *(r["psi"] * 1.05 for _, r in rows)])
    height = 30 + bar_h * len(rows)
    body = []
    for i, (name, result) in enumerate(rows):
        y, length = 20 + i * bar_h, plot_w * result["psi"] / top_psi
        body += [
            _text(left - 6, y + 14, name, "end"),
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{bar_h - 6}" '
            f'fill="{COLORS[result["status"]]}"/>',
            _text(left + length + 4, y + 14, f"{result['psi']:.3f}", "start"),
        ]
    for key in ("psi_watch", "psi_significant"):
        x = left + plot_w * thresholds[key] / top_psi
        body += [
            f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" stroke="#555" '
            'stroke-dasharray="4 3"/>',
            _text(x, 11, f"{key.removeprefix('psi_')} {thresholds[key]:g}"),
        ]
    return _svg(width, height, body)


def daily_chart(daily: list[dict], key: str, reference: float) -> str:
    """One day's value per point, joined, with the reference value as a dashed line."""
    width, height, left, top, bottom = 540, 230, 64, 16, 74
    plot_w, plot_h = width - left - 14, height - top - bottom
    top_value = max([reference, *(day[key] for day in daily)]) * 1.2 or 1
    step = plot_w / max(len(daily), 1)
    points = [
        (left + (i + 0.5) * step, top + plot_h * (1 - day[key] / top_value))
        for i, day in enumerate(daily)
    ]
    ref_y = top + plot_h * (1 - reference / top_value)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 14}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        _text(left - 4, top + 4, _percent(top_value), "end"),
        f'<line x1="{left}" y1="{ref_y:.1f}" x2="{width - 14}" y2="{ref_y:.1f}" '
        f'stroke="{REFERENCE}" stroke-dasharray="5 4"/>',
        _text(width - 16, ref_y - 4, f"reference {_percent(reference)}", "end"),
        '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            CURRENT, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        ),
    ]
    for (x, y), day in zip(points, daily, strict=True):
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{CURRENT}"><title>{day["day"]}: '
            f"{_percent(day[key])} of {day['predictions']}</title></circle>"
        )
        if len(daily) <= 31:
            body.append(_text(x, top + plot_h + 14, day["day"], "end", rotate=True))
    return _svg(width, height, body)


def render(report: dict) -> str:
    """The whole page for a ``drift.json`` summary."""
    model, thresholds = report["model"], report["thresholds"]
    compared = [*report["features"].items(), ("probability of default", report["probability"])]
    compared.append(("credit score", report["score"]))
    skipped = report["skipped"]
    others = ", ".join(f"v{v}: {n}" for v, n in skipped["other_model_versions"].items()) or "none"
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{r['psi']:.4f}</td><td>{_badge(r['status'])}</td></tr>"
        for name, r in compared
    )
    reasons = "".join(
        f"<tr><td>{escape(code)}</td><td>{_percent(r['reference'])}</td>"
        f"<td>{_percent(r['current'])}</td><td>{100 * (r['current'] - r['reference']):+.2f}</td>"
        "</tr>"
        for code, r in report["reasons"].items()
    )
    decline, mean = report["decline_rate"], report["mean_probability"]
    cards = "".join(
        f'<div class="card"><h3>{escape(name)} — PSI {r["psi"]:.4f} {_badge(r["status"])}</h3>'
        f"{histogram(r['bins'], r['reference'], r['current'])}</div>"
        for name, r in compared
    )
    window = report["window"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {escape(model["name"])} \
version {escape(model["version"])}</title><style>{STYLE}</style></head><body>
<h1>Drift report: {escape(model["name"])} version {escape(model["version"])} \
{_badge(report["status"])}</h1>
<p class="meta">{report["records"]} predictions from {escape(window["first_day"])} to \
{escape(window["last_day"])} (window: {escape(window["since"] or "start")} to \
{escape(window["until"] or "now")}) in {escape(log_description(report))}; reference: the \
training split of run {escape(model["run_id"])} (profile SHA256 \
{escape(model["reference_profile_sha256"][:12])}…). Skipped: {skipped["corrupt_lines"]} torn or \
corrupt lines, {skipped["outside_window"]} records outside the window, other model versions: \
{escape(others)}. Generated {escape(report["generated_at"])}.</p>
<h2>Population stability index</h2>
<p>Below {thresholds["psi_watch"]:g} stable, {thresholds["psi_watch"]:g} to \
{thresholds["psi_significant"]:g} watch, above {thresholds["psi_significant"]:g} significant.</p>
{psi_chart(compared, thresholds)}
<table><tr><th>compared</th><th>PSI</th><th>status</th></tr>{rows}</table>
<h2>Decisions by day</h2>
<p>Decline rate (probability ≥ {decline["threshold"]:g}): reference \
{_percent(decline["reference"])}, current {_percent(decline["current"])}. Mean probability of \
default: reference {_percent(mean["reference"])}, current {_percent(mean["current"])}.</p>
<div class="grid"><div class="card"><h3>Decline rate</h3>\
{daily_chart(report["daily"], "decline_rate", decline["reference"])}</div>
<div class="card"><h3>Mean probability of default</h3>\
{daily_chart(report["daily"], "mean_probability", mean["reference"])}</div></div>
<h2>Reason codes</h2><p>Share of answers giving each code.</p>
<table><tr><th>code</th><th>reference</th><th>current</th><th>change (percentage points)</th></tr>\
{reasons}</table>
<h2>Distributions</h2><div class="grid">{cards}</div>
</body></html>
"""
