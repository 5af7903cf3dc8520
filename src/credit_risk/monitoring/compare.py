"""Parallel run: the challenger re-scores the champion's logged applicants; the swap sets.

A :class:`SwapTally` streams the prediction log (:class:`~credit_risk.monitoring.log_tally.
LogStream`) and keeps only counts, so memory does not grow with the log. For every usable
record (the champion's version, in the window) the challenger computes what the service would
answer: the probability of default (:class:`~credit_risk.ml.flat_trees.DefaultProbability`),
the decision at its own threshold and the score on its own scale; the reason codes
(:func:`~credit_risk.ml.scorecard.assess`) for the swapped applicants, the only ones the report
shows them for. Decisions: ``prediction`` 1 (probability at least the threshold) is a decline.

Counted per integer champion score: the four swap-set cells; per integer point: the
challenger's score and the score change; and a grid of both probabilities on the log-odds scale
(:data:`RANK_BINS` bins per axis over ±:data:`LOG_ODDS_RANGE`) from which the Spearman rank
correlation is computed with mid-ranks (applicants in one bin count as tied): exact up to the
order within a bin.
"""

import math
from collections import Counter
from dataclasses import dataclass
from datetime import date

import numpy as np
from threadpoolctl import threadpool_limits

from credit_risk.ml.contract import FEATURES
from credit_risk.ml.flat_trees import DefaultProbability
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.monitoring.drift import psi
from credit_risk.monitoring.log_tally import CODE, FEATURE_VALUES, LogStream, without_reasons

CELLS = ("both_approve", "both_decline", "swap_in", "swap_out")
"""Swap-set cells: approved by both, declined by both, approved only by the challenger (swap-in),
approved only by the champion (swap-out)."""
SWAPS = CELLS[2:]
MODELS = ("champion", "challenger")
RANK_BINS = 1000
LOG_ODDS_RANGE = 10.0
BANDS = 10
"""Champion score bands: deciles of the champion's scores (fewer where scores tie)."""
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_REASONS = 5
NO_OUTCOMES = (
    "no outcomes are recorded yet (the outcomes issue, 22, will record them): observed default "
    "rates per cell and per approved population appear here once they are; outcomes will exist "
    "only for applicants that were approved"
)


@dataclass(frozen=True)
class Challenger:
    """The challenger's model, the service's way to compute its probabilities, and what the
    service would take from its registry version."""

    model: object
    probability: DefaultProbability
    scale: ScoreScale
    threshold: float

    @classmethod
    def of(cls, model, scale: ScoreScale, threshold: float) -> "Challenger":
        return cls(model, DefaultProbability(model), scale, threshold)


def swap_cells(champion_declines: np.ndarray, challenger_declines: np.ndarray) -> np.ndarray:
    """The index in :data:`CELLS` of every applicant."""
    return np.where(
        champion_declines, np.where(challenger_declines, 1, 2), np.where(challenger_declines, 3, 0)
    )


def rank_bins(probability: np.ndarray) -> np.ndarray:
    """The bin of the Spearman grid of each probability (log-odds, ends clipped)."""
    p = np.clip(probability, 1e-15, 1 - 1e-15)
    position = (np.log(p) - np.log1p(-p) + LOG_ODDS_RANGE) / (2 * LOG_ODDS_RANGE)
    return np.clip((position * RANK_BINS).astype("int64"), 0, RANK_BINS - 1)


def spearman(grid: np.ndarray) -> float | None:
    """Spearman's rank correlation from a grid of counts (rows: one variable's bins in order,
    columns: the other's), with mid-ranks for the applicants of a bin; None if one is constant."""
    grid = grid.astype("float64")
    rows, columns = grid.sum(axis=1), grid.sum(axis=0)
    mean = (grid.sum() + 1) / 2
    row_ranks = np.cumsum(rows) - rows + (rows + 1) / 2 - mean
    column_ranks = np.cumsum(columns) - columns + (columns + 1) / 2 - mean
    spread = math.sqrt(rows @ row_ranks**2) * math.sqrt(columns @ column_ranks**2)
    return float(row_ranks @ grid @ column_ranks / spread) if spread else None


def quantile(counts: np.ndarray, share: float) -> int:
    """The index of the value at ``share`` of a histogram (nearest rank from below)."""
    return int(np.searchsorted(np.cumsum(counts), share * counts.sum()))


class SwapTally(LogStream):
    """Swap-set counts, score histograms, the rank grid and swapped applicants' reason codes of
    the usable records of the champion's ``version``; scores counted within ``[low, high]``."""

    START_METHOD = "spawn"  # the challenger may be an OpenMP HistGradientBoosting

    def __init__(
        self,
        challenger: Challenger,
        version: str,
        since: date | None,
        until: date | None,
        low: int,
        high: int,
    ):
        super().__init__(version, since, until)
        self.challenger, self.low, self.high = challenger, low, high
        points = high - low + 1
        self.cells = np.zeros((points, len(CELLS)), "int64")
        """Per champion score (``low`` first), the applicants of each cell."""
        self.challenger_scores = np.zeros(points, "int64")
        self.changes = np.zeros(2 * points - 1, "int64")
        """Per score change, from ``low - high`` up."""
        self.ranks = np.zeros((RANK_BINS, RANK_BINS), "int64")
        self.probabilities = np.zeros(len(MODELS))
        self.reasons = {swap: {model: Counter() for model in MODELS} for swap in SWAPS}
        self.days: set[str] = set()

    def merge(self, other: "SwapTally") -> None:
        """Add the counts of another tally of the same challenger, version, window and scores."""
        super().merge(other)
        for name in ("cells", "challenger_scores", "changes", "ranks", "probabilities"):
            getattr(self, name)[...] += getattr(other, name)
        for swap in SWAPS:
            for model in MODELS:
                self.reasons[swap][model].update(other.reasons[swap][model])
        self.days |= other.days

    _parsed_part = staticmethod(without_reasons)

    def _columns(self, records: list[dict], block: bytes | None = None) -> dict:
        return {
            "inputs": np.array([FEATURE_VALUES(r["inputs"]) for r in records], "float64"),
            "probability": np.array([r["probability"] for r in records], "float64"),
            "prediction": np.array([r["prediction"] for r in records], "int64"),
            "score": np.array([r["score"] for r in records], "int64"),
            "day": [r["timestamp"][:10] for r in records],
            "records": records,
            "block": block,
        }

    def _count(self, columns: dict, count: int) -> None:
        values = columns["inputs"].reshape(count, len(FEATURES))
        challenger = self.challenger
        with threadpool_limits(1):  # one file per core already
            probability = challenger.probability(values)
        scores = challenger.scale.points(probability)
        cells = swap_cells(columns["prediction"] == 1, probability >= challenger.threshold)
        champion_scores = np.clip(columns["score"], self.low, self.high)
        self.cells += np.bincount(
            (champion_scores - self.low) * len(CELLS) + cells, minlength=self.cells.size
        ).reshape(self.cells.shape)
        self.challenger_scores += np.bincount(scores - self.low, minlength=len(self.cells))
        changes = scores - champion_scores + self.high - self.low
        self.changes += np.bincount(changes, minlength=len(self.changes))
        grid = rank_bins(columns["probability"]) * RANK_BINS + rank_bins(probability)
        self.ranks += np.bincount(grid, minlength=self.ranks.size).reshape(self.ranks.shape)
        self.probabilities += (columns["probability"].sum(), probability.sum())
        self.days.update(columns["day"])
        swapped = np.flatnonzero(cells >= 2)
        if not len(swapped):
            return
        with threadpool_limits(1):
            _, _, reasons = assess(
                challenger.model, values[swapped], challenger.scale, challenger.probability
            )
        champion = champion_codes(columns, swapped.tolist())
        for row, codes, challenger_reasons in zip(swapped.tolist(), champion, reasons, strict=True):
            counted = self.reasons[CELLS[cells[row]]]
            counted["champion"].update(codes)
            counted["challenger"].update(reason["code"] for reason in challenger_reasons)


def champion_codes(columns: dict, rows: list[int]) -> list[list[str]]:
    """The logged reason codes of the records ``rows``: from the records where they were
    parsed with them, else found in the block's lines (a block parsed in one go without its
    reason lists holds one usable record per line)."""
    if columns["block"] is None:
        records = columns["records"]
        return [[reason["code"] for reason in records[row]["reasons"]] for row in rows]
    lines = columns["block"].split(b"\n")
    return [[code.decode() for code in CODE.findall(lines[row])] for row in rows]


def band_edges(counts: np.ndarray, low: int) -> list[int]:
    """Upper scores of the champion score bands but the last (deciles of ``counts``, per
    integer score from ``low``)."""
    return sorted({low + quantile(counts, k / BANDS) for k in range(1, BANDS)})


def banded(counts: np.ndarray, edges: list[int], low: int) -> np.ndarray:
    """Per-score counts (first axis, from ``low``) summed into the bands of ``edges``."""
    bounds = [0, *(edge - low + 1 for edge in edges), len(counts)]
    return np.array([counts[a:b].sum(axis=0) for a, b in zip(bounds, bounds[1:], strict=False)])


def band_labels(edges: list[int]) -> list[str]:
    """``≤ a``, ``a+1–b``, …, ``> z``."""
    if not edges:
        return ["all"]
    middle = [f"{a + 1}–{b}" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"≤ {edges[0]}", *middle, f"> {edges[-1]}"]


def swapped_reasons(tally: SwapTally, swap: str) -> dict:
    """The applicants of a swap set and each model's most frequent reason codes for them."""
    applicants = int(tally.cells[:, CELLS.index(swap)].sum())
    return {"applicants": applicants} | {
        model: [
            {"code": code, "count": count, "share": round(count / max(applicants, 1), 6)}
            for code, count in tally.reasons[swap][model].most_common(TOP_REASONS)
        ]
        for model in MODELS
    }


def summary(tally: SwapTally, max_swap_share: float) -> dict:
    """The machine-readable comparison (``compare.json``) of a tally."""
    n, low = tally.records, tally.low
    totals = tally.cells.sum(axis=0)
    share = {cell: float(totals[i] / n) for i, cell in enumerate(CELLS)}
    approval = {
        "champion": share["both_approve"] + share["swap_out"],
        "challenger": share["both_approve"] + share["swap_in"],
    }
    swap_share = share["swap_in"] + share["swap_out"]
    champion_scores = tally.cells.sum(axis=1)
    edges = band_edges(champion_scores, low)
    bands = banded(tally.cells, edges, low)
    distributions = {
        "champion": banded(champion_scores, edges, low) / n,
        "challenger": banded(tally.challenger_scores, edges, low) / n,
    }
    rho = spearman(tally.ranks)
    shift = low - tally.high
    changes = np.arange(len(tally.changes)) + shift
    return {
        "records": n,
        "status": "within" if swap_share <= max_swap_share else "above",
        "max_swap_share": max_swap_share,
        "swap_share": round(swap_share, 6),
        "swap_sets": {
            cell: {"count": int(totals[i]), "share": round(share[cell], 6)}
            for i, cell in enumerate(CELLS)
        },
        "approval_rate": {
            **{model: round(rate, 6) for model, rate in approval.items()},
            "change": round(approval["challenger"] - approval["champion"], 6),
        },
        "mean_probability": {
            model: round(float(tally.probabilities[i] / n), 6) for i, model in enumerate(MODELS)
        },
        "skipped": {
            "corrupt_lines": tally.corrupt,
            "outside_window": tally.outside,
            "other_model_versions": {v: c for v, c in tally.versions.items() if v != tally.version},
        },
        "score_shift": {
            "psi": round(psi(distributions["champion"], distributions["challenger"]), 6),
            "mean_change": round(float(changes @ tally.changes / n), 6),
            "change_quantiles": {
                f"p{round(100 * q):02d}": quantile(tally.changes, q) + shift for q in QUANTILES
            },
            "spearman_probability": None if rho is None else round(rho, 6),
            "bands": band_labels(edges),
            "distribution": {
                model: [round(float(s), 6) for s in shares]
                for model, shares in distributions.items()
            },
        },
        "swap_sets_by_champion_score": [
            {"band": label, "records": int(row.sum())}
            | {cell: int(count) for cell, count in zip(CELLS, row.tolist(), strict=True)}
            for label, row in zip(band_labels(edges), bands, strict=True)
        ],
        "swapped_reasons": {swap: swapped_reasons(tally, swap) for swap in SWAPS},
        "outcomes": {"available": False, "note": NO_OUTCOMES},
    }
