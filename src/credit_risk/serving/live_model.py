"""The model a worker scores with, loaded only once it is verified, swapped as a whole.

A :class:`LiveModel` holds everything one answer needs: the :class:`ServedModel` record (version,
threshold, score scale), the sklearn Pipeline and its fast probability function. The service
keeps one and replaces it with another in one assignment, so a group of applicants is scored
and logged with one model from start to end.

Both sources are checked the same way before anything is served: the imported BentoML model
(:func:`imported_model`) and a registry version (:func:`registry_model`) must be skops, match
the ``model_sha256`` recorded at registration, hold only the trusted types, carry valid
threshold and score-scale tags, and answer a few probe applicants with finite results.
"""

import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import numpy as np
from mlflow.entities.model_registry import ModelVersion

from credit_risk.ml.contract import EXAMPLE_APPLICANT, FEATURE_NAMES, FEATURES, REFERENCE_APPLICANT
from credit_risk.ml.flat_trees import DefaultProbability
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.registry.model_artifact import ModelRefused, download_artifact, verified_model
from credit_risk.registry.names import MODEL_NAME, PRODUCTION_ALIAS, PRODUCTION_STAGE
from credit_risk.registry.store import connect, redact
from credit_risk.serving.release import (
    ImportRefused,
    ServedModel,
    registry_record,
    verify_model_file,
)

PROBE_APPLICANTS = np.array(
    [
        [EXAMPLE_APPLICANT[name] for name in FEATURE_NAMES],
        [REFERENCE_APPLICANT[name] for name in FEATURE_NAMES],
        [feature.minimum for feature in FEATURES],
        [feature.maximum for feature in FEATURES],
        [None if feature.nullable else feature.minimum for feature in FEATURES],
    ],
    dtype="float64",
)
"""Applicants every model must answer with finite probabilities and scores before it serves:
an everyday one, the reference, the contract's lower and upper bounds, missing values."""


@dataclass(frozen=True)
class LiveModel:
    """A verified model, ready to score: where it was ``loaded_from``, and ``since`` when."""

    served: ServedModel
    pipeline: object
    scale: ScoreScale
    default_probability: DefaultProbability = field(repr=False)
    loaded_from: str = ""
    since: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def of(cls, served: ServedModel, pipeline, loaded_from: str) -> "LiveModel":
        """The model ``pipeline`` of ``served``, once its tags and probe answers are valid."""
        where = f"{MODEL_NAME} version {served.model_version}"
        threshold = served.decision_threshold
        if not (math.isfinite(threshold) and 0 < threshold < 1):
            raise ModelRefused(f"{where}: decision threshold {threshold} is not in (0, 1)")
        try:
            scale = ScoreScale.from_params(served.score_scale)
        except ValueError as error:
            raise ModelRefused(f"{where}: score scale {served.score_scale}: {error}") from None
        live = cls(served, pipeline, scale, DefaultProbability(pipeline), loaded_from)
        try:
            probabilities, scores, _ = live.assess(PROBE_APPLICANTS)
        except Exception as error:  # noqa: BLE001 - any failure on a probe refuses the model
            raise ModelRefused(f"{where}: probe applicants could not be scored: {error}") from None
        finite = all(math.isfinite(p) and 0 <= p <= 1 for p in probabilities)
        if not finite or not all(math.isfinite(s) for s in scores):
            raise ModelRefused(
                f"{where}: probe applicants got probabilities {probabilities} and scores "
                f"{scores}: not finite probabilities in [0, 1]"
            )
        return live

    def assess(self, values: np.ndarray) -> tuple[list, list, list]:
        """Probabilities, scores and reason codes of applicant rows (contract order)."""
        return assess(self.pipeline, values, self.scale, self.default_probability)


def imported_model(model: bentoml.Model) -> LiveModel:
    """The imported BentoML model, verified; :class:`ValueError` naming what is wrong."""
    from credit_risk.ml.model_file import load_model

    served = ServedModel.of(model)
    path = verify_model_file(model, served)
    try:
        pipeline = load_model(path)
    except Exception as error:  # noqa: BLE001 - skops refuses untrusted types in many ways
        raise ModelRefused(f"BentoML model {model.tag}: {path} does not load: {error}") from None
    return LiveModel.of(served, pipeline, f"BentoML model {model.tag}")


def registry_model(uri: str, version: ModelVersion) -> LiveModel:
    """A registry ``version`` (the Production one), downloaded and verified; raises
    :class:`ModelRefused` naming the failed check, ``TrackingError`` if the registry fails."""
    try:
        served = registry_record(connect(uri), uri, version, PRODUCTION_STAGE, PRODUCTION_ALIAS)
    except ImportRefused as refusal:
        raise ModelRefused(str(refusal)) from None
    with tempfile.TemporaryDirectory() as folder:
        artifact = download_artifact(served.model_version, uri, Path(folder))
        pipeline = verified_model(artifact, served.model_version, served.model_sha256)
    return LiveModel.of(served, pipeline, f"MLflow registry at {redact(uri)}")
