"""Outcomes as stored and shipped: one JSON line each (``prediction_id``, ``SeriousDlqin2yrs``,
``observed_at``), read into a mapping by prediction id."""

from dataclasses import dataclass
from pathlib import Path

import orjson

from credit_risk.ml.contract import TARGET
from credit_risk.serving.outcome_shipping import OUTCOMES_FILE


@dataclass(frozen=True)
class Outcome:
    """What became of one logged prediction's applicant."""

    prediction_id: str
    defaulted: int
    observed_at: str

    def record(self) -> dict:
        return {"prediction_id": self.prediction_id, TARGET: self.defaulted,
                "observed_at": self.observed_at}  # fmt: skip


def add_outcomes(data: bytes, outcomes: dict[str, Outcome], conflicting: set[str]) -> None:
    """Add the outcomes of the complete lines of ``data`` to ``outcomes``: the first observation
    of a prediction is kept; a prediction given two different labels is taken out and its id
    put in ``conflicting``."""
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        record = orjson.loads(line)
        outcome = Outcome(record["prediction_id"], record[TARGET], record["observed_at"])
        known = outcomes.get(outcome.prediction_id)
        if outcome.prediction_id in conflicting:
            continue
        if known is None:
            outcomes[outcome.prediction_id] = outcome
        elif known.defaulted != outcome.defaulted:
            del outcomes[outcome.prediction_id]
            conflicting.add(outcome.prediction_id)


def stored_outcomes(directory: Path) -> dict[str, Outcome]:
    """The outcomes taken in so far in ``directory``, by prediction id (none if there is no
    outcomes file)."""
    try:
        data = (directory / OUTCOMES_FILE).read_bytes()
    except FileNotFoundError:
        return {}
    outcomes: dict[str, Outcome] = {}
    add_outcomes(data, outcomes, set())
    return outcomes
