"""The credit score and the reason codes of a decision, both from the model's probabilities.

**Score.** ``points = base_points + points_to_double_odds × log2(odds / base_odds)`` with the
good:bad odds ``odds = (1 - p) / p`` of the probability of default ``p``: ``base_points`` at
``base_odds``, ``points_to_double_odds`` more each time the odds double. Rounded to a whole
number and kept within ``[min_points, max_points]``.

**Reason codes** (points lost against a reference applicant). For each adverse factor of the
contract (:data:`~credit_risk.ml.contract.REASON_CODES`) on which the applicant differs from
the reference applicant (:data:`~credit_risk.ml.contract.REFERENCE_APPLICANT`), the applicant
is changed in that factor alone to the reference's value and scored again by the same model.
The points the change would gain are the points lost to that factor. The reasons are the
factors with the most points lost, strongest first, at most :data:`MAX_REASONS`, each losing at
least :data:`MIN_REASON_POINTS`; a factor whose change would not raise the score is never a
reason. A missing value is its own factor (``NOINCOME``: income at the reference's, with the same
monthly debt as a ratio of it; ``NODEPENDENTS``), as are past-due counts reported only as a
96/98 code (``LATECODE``: those counts at 0).
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from credit_risk.ml.contract import (
    FEATURE_NAMES,
    FEATURES,
    PAST_DUE_NOT_REPORTED,
    REFERENCE_APPLICANT,
    ReasonCode,
    is_past_due_code,
)

MAX_REASONS = 4
MIN_REASON_POINTS = 1.0
_INCOME = FEATURE_NAMES.index("MonthlyIncome")
_DEBT = FEATURE_NAMES.index("DebtRatio")
_PAST_DUE = [i for i, feature in enumerate(FEATURES) if feature.sentinel_codes]
_REFERENCE = np.array([REFERENCE_APPLICANT[name] for name in FEATURE_NAMES])
_REFERENCE_DEBT_DOLLARS = _REFERENCE[_DEBT] * _REFERENCE[_INCOME]


@dataclass(frozen=True)
class ScoreScale:
    """The points scale (``params.yaml``, section ``score``)."""

    base_points: float
    base_odds: float
    points_to_double_odds: float
    min_points: int
    max_points: int

    @classmethod
    def from_params(cls, section: dict) -> "ScoreScale":
        """The scale of ``params.yaml``'s ``score`` section, checked."""
        try:
            scale = cls(**section)
        except TypeError as error:
            raise ValueError(f"params.yaml: score: {error}") from None
        numbers = asdict(scale).values()
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            raise ValueError(f"params.yaml: score: every setting must be a number, got {section}")
        if scale.base_odds <= 0 or scale.points_to_double_odds <= 0:
            raise ValueError("params.yaml: score.base_odds and points_to_double_odds must be > 0")
        if not scale.min_points < scale.max_points:
            raise ValueError("params.yaml: score.min_points must be below score.max_points")
        return scale

    def raw_points(self, probability: np.ndarray) -> np.ndarray:
        """Unrounded, unbounded points (probabilities kept off 0 and 1 by 1e-15)."""
        p = np.clip(probability, 1e-15, 1 - 1e-15)
        factor = self.points_to_double_odds / math.log(2)
        return self.base_points + factor * (np.log((1 - p) / p) - math.log(self.base_odds))

    def points(self, probability: np.ndarray) -> np.ndarray:
        """The credit scores: rounded points within ``[min_points, max_points]``."""
        bounded = np.clip(self.raw_points(probability), self.min_points, self.max_points)
        return np.rint(bounded).astype(int)


def _apply_feature(feature_index: int):
    """Set one feature to the reference (past-due codes and missing values are other factors)."""

    def applies(values: np.ndarray, direction: int) -> np.ndarray:
        value = values[:, feature_index]
        reference = _REFERENCE[feature_index]
        if feature_index == _DEBT:  # without income the value is dollars, not a ratio
            reference = np.where(np.isnan(values[:, _INCOME]), _REFERENCE_DEBT_DOLLARS, reference)
        differs = ~np.isnan(value) & (value != reference)
        if FEATURES[feature_index].sentinel_codes:
            differs &= ~is_past_due_code(value)
        if direction:  # a model monotone in it: the reference's side can only cost points
            differs &= direction * (value - reference) > 0
        return differs

    def change(rows: np.ndarray) -> None:
        if feature_index == _DEBT:
            rows[:, _DEBT] = np.where(
                np.isnan(rows[:, _INCOME]), _REFERENCE_DEBT_DOLLARS, _REFERENCE[_DEBT]
            )
        else:
            rows[:, feature_index] = _REFERENCE[feature_index]

    return applies, change


def _not_reported(feature_index: int):
    """Give a missing value the reference's; a missing income with the same monthly debt (the
    dollars ``DebtRatio`` holds then, as a ratio of that income)."""

    def applies(values: np.ndarray, direction: int) -> np.ndarray:
        return np.isnan(values[:, feature_index])

    def change(rows: np.ndarray) -> None:
        if feature_index == _INCOME:
            rows[:, _DEBT] = rows[:, _DEBT] / _REFERENCE[_INCOME]
        rows[:, feature_index] = _REFERENCE[feature_index]

    return applies, change


def _past_due_not_reported():
    def applies(values: np.ndarray, direction: int) -> np.ndarray:
        return is_past_due_code(values[:, _PAST_DUE]).any(axis=1)

    def change(rows: np.ndarray) -> None:
        past_due = rows[:, _PAST_DUE]
        past_due[is_past_due_code(past_due)] = 0
        rows[:, _PAST_DUE] = past_due

    return applies, change


FACTORS: list[tuple[ReasonCode, tuple]] = [
    *(
        (ReasonCode(f.reason_code, f.name, f.reason), _apply_feature(i))
        for i, f in enumerate(FEATURES)
    ),
    *(
        (ReasonCode(f.missing_reason_code, f.name, f.missing_reason), _not_reported(i))
        for i, f in enumerate(FEATURES)
        if f.nullable
    ),
    (PAST_DUE_NOT_REPORTED, _past_due_not_reported()),
]
"""Every adverse factor, in the order of :data:`~credit_risk.ml.contract.REASON_CODES`."""
_REASONS = [asdict(code) for code, _ in FACTORS]  # one dict per code, shared by every answer


def assess(
    model, values: np.ndarray, scale: ScoreScale, default_probability: Callable | None = None
) -> tuple[list, list, list]:
    """Probabilities, scores and reason codes for the applicants ``values`` (rows in contract
    order, NaN for missing), with one model call for the applicants and their changed copies:
    ``default_probability(rows, copies_of)`` (the model's P(default) computed faster, as
    :class:`~credit_risk.ml.flat_trees.DefaultProbability` does; ``copies_of``: the applicant
    of each copy, after the applicants in ``rows``) or the model's own.

    Where the model is monotone in a feature (``monotonic_cst`` of the Pipeline's last step),
    an applicant on the reference's side of it is not changed: that could only cost points.
    """
    constraints = getattr(model[-1], "monotonic_cst", None) or [0] * len(FEATURES)
    directions = [*constraints[: len(FEATURES)], *[0] * (len(FACTORS) - len(FEATURES))]
    changed, owners = [values], []
    for direction, (_, (applies, change)) in zip(directions, FACTORS, strict=True):
        rows = np.flatnonzero(applies(values, direction))
        copies = values[rows].copy()
        change(copies)
        changed.append(copies)
        owners.append(rows)
    stacked = np.vstack(changed)
    if default_probability is None:
        probabilities = model.predict_proba(stacked)[:, 1]
    else:
        probabilities = default_probability(stacked, np.concatenate(owners))
    raw = scale.raw_points(probabilities)
    count = len(values)
    lost = np.full((count, len(FACTORS)), -np.inf)
    start = count
    for factor, rows in enumerate(owners):
        lost[rows, factor] = raw[start : start + len(rows)] - raw[rows]
        start += len(rows)
    strongest = np.argsort(-lost, axis=1, kind="stable")[:, :MAX_REASONS]
    # Strongest first: the factors that lose enough points are the first ``kept`` of a row.
    kept = (np.take_along_axis(lost, strongest, axis=1) >= MIN_REASON_POINTS).sum(axis=1)
    reasons = [
        [_REASONS[f] for f in order[:size]]
        for order, size in zip(strongest.tolist(), kept.tolist(), strict=True)
    ]
    first = probabilities[:count]
    return first.tolist(), scale.points(first).tolist(), reasons
