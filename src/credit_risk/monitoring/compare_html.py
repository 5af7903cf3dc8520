"""The parallel-run report as one self-contained HTML page (tables and inline SVG, no scripts),
in the style of the drift report: the swap-set table, the score shift, the swap sets by
champion score band, the swapped applicants' reason codes and the outcomes (none yet)."""

from html import escape

from credit_risk.monitoring.log_source import log_description
from credit_risk.monitoring.report_html import STYLE, _percent, histogram

STATUS_COLORS = {"within": "#2e7d32", "above": "#c62828"}
CELL_NAMES = {
    "both_approve": "approved by both",
    "both_decline": "declined by both",
    "swap_in": "swap-in (only the challenger approves)",
    "swap_out": "swap-out (only the champion approves)",
}


def _cell(report: dict, cell: str) -> str:
    entry = report["swap_sets"][cell]
    return f"<td>{entry['count']:,}<br><small>{_percent(entry['share'])}</small></td>"


def swap_table(report: dict) -> str:
    """The 2×2 table: champion's decision by row, challenger's by column, with totals."""
    rate = report["approval_rate"]
    return f"""<table><tr><th></th><th>challenger approves</th><th>challenger declines</th>\
<th>champion's rate</th></tr>
<tr><td>champion approves</td>{_cell(report, "both_approve")}{_cell(report, "swap_out")}\
<td>{_percent(rate["champion"])} approved</td></tr>
<tr><td>champion declines</td>{_cell(report, "swap_in")}{_cell(report, "both_decline")}\
<td>{_percent(1 - rate["champion"])} declined</td></tr>
<tr><td>challenger's rate</td><td>{_percent(rate["challenger"])} approved</td>\
<td>{_percent(1 - rate["challenger"])} declined</td>\
<td>change {100 * rate["change"]:+.2f} points</td></tr></table>"""


def reasons_table(report: dict) -> str:
    """Top reason codes of each model for swap-ins and swap-outs."""
    rows = []
    for swap, entry in report["swapped_reasons"].items():
        for model in ("champion", "challenger"):
            codes = ", ".join(f"{escape(r['code'])} ({_percent(r['share'])})" for r in entry[model])
            rows.append(
                f"<tr><td>{escape(CELL_NAMES[swap])}</td><td>{entry['applicants']:,}</td>"
                f"<td>{model}</td><td>{codes or '—'}</td></tr>"
            )
    return (
        "<table><tr><th>swap set</th><th>applicants</th><th>model</th>"
        f"<th>top reason codes (share of the set's applicants)</th></tr>{''.join(rows)}</table>"
    )


def bands_table(report: dict) -> str:
    """The swap sets per champion score band."""
    header = "".join(f"<th>{escape(name)}</th>" for name in CELL_NAMES.values())
    rows = "".join(
        f"<tr><td>{escape(band['band'])}</td><td>{band['records']:,}</td>"
        + "".join(f"<td>{band[cell]:,}</td>" for cell in CELL_NAMES)
        + "</tr>"
        for band in report["swap_sets_by_champion_score"]
    )
    return f"<table><tr><th>champion score</th><th>applicants</th>{header}</tr>{rows}</table>"


def render(report: dict) -> str:
    """The whole page for a ``compare.json`` report."""
    champion, challenger, shift = report["champion"], report["challenger"], report["score_shift"]
    window, skipped = report["window"], report["skipped"]
    others = ", ".join(f"v{v}: {n}" for v, n in skipped["other_model_versions"].items()) or "none"
    quantiles = "".join(
        f"<tr><td>{name}</td><td>{value:+d}</td></tr>"
        for name, value in shift["change_quantiles"].items()
    )
    bands = report["swap_sets_by_champion_score"]
    swap_in = [band["swap_in"] / max(band["records"], 1) for band in bands]
    swap_out = [band["swap_out"] / max(band["records"], 1) for band in bands]
    labels = [band["band"] for band in bands]
    spearman = shift["spearman_probability"]
    status = report["status"]
    title = (
        f"Parallel run: {escape(challenger['model_name'])} version "
        f"{escape(challenger['model_version'])} against version {escape(champion['model_version'])}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style>\
</head><body>
<h1>{title} <span class="badge" style="background:{STATUS_COLORS[status]}">swap share \
{_percent(report["swap_share"])} {status} {_percent(report["max_swap_share"])}</span></h1>
<p class="meta">{report["records"]:,} logged applicants answered by the champion (version \
{escape(champion["model_version"])}, threshold {champion["decision_threshold"]:g}) from \
{escape(window["first_day"])} to {escape(window["last_day"])} (window: \
{escape(window["since"] or "start")} to {escape(window["until"] or "now")}) in \
{escape(log_description(report))}, scored again by the challenger (version \
{escape(challenger["model_version"])}, run {escape(challenger["run_id"])}, threshold \
{challenger["decision_threshold"]:g}). Skipped: {skipped["corrupt_lines"]} torn or corrupt \
lines, {skipped["outside_window"]} records outside the window, other model versions: \
{escape(others)}. Generated {escape(report["generated_at"])}.</p>
<h2>Swap sets</h2>
<p>Swap-ins would be approved by the challenger and are declined today; swap-outs are approved \
today and would be declined. The swap share is both together.</p>
{swap_table(report)}
<h2>Score shift</h2>
<p>PSI between the two score distributions (champion score bands): {shift["psi"]:.4f}. Mean \
score change (challenger − champion): {shift["mean_change"]:+.2f} points. Spearman rank \
correlation of the two probabilities of default: \
{"—" if spearman is None else f"{spearman:.4f}"}. Mean probability of default: champion \
{_percent(report["mean_probability"]["champion"])}, challenger \
{_percent(report["mean_probability"]["challenger"])}.</p>
<div class="grid"><div class="card"><h3>Scores by champion score band</h3>\
{
        histogram(
            labels,
            shift["distribution"]["champion"],
            shift["distribution"]["challenger"],
            ("champion", "challenger"),
        )
    }</div>
<div class="card"><h3>Swap-ins and swap-outs: share of each band</h3>\
{histogram(labels, swap_in, swap_out, ("swap-ins", "swap-outs"))}</div>
<div class="card"><h3>Score change quantiles (points)</h3><table><tr><th>quantile</th>\
<th>change</th></tr>{quantiles}</table></div></div>
<h2>Swap sets by champion score band</h2>
{bands_table(report)}
<h2>Reason codes of the swapped applicants</h2>
{reasons_table(report)}
<h2>Outcomes</h2>
<p>{escape(report["outcomes"]["note"])}.</p>
</body></html>
"""
