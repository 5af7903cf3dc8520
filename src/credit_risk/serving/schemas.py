"""Request and response schemas of the HTTP API, generated from the feature contract."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs it for TypedDict on Python 3.11

from credit_risk.ml.contract import FEATURES, Feature

MAX_BATCH_ROWS = 10_000


def _field(feature: Feature):
    kind = int if feature.integer else float
    field = Field(ge=feature.minimum, le=feature.maximum, description=feature.description)
    return Annotated[kind | None if feature.nullable else kind, field]


Applicant = TypedDict("Applicant", {feature.name: _field(feature) for feature in FEATURES})
"""One applicant: the contract's ten features (JSON numbers; nullable ones may be null)."""
Applicant.__pydantic_config__ = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
APPLICANT = TypeAdapter(Applicant)


class BatchRequest(BaseModel):
    """``/predict/batch``'s body: ``{"applicants": [...]}``, nothing else."""

    model_config = ConfigDict(extra="forbid")
    applicants: list[Applicant] = Field(min_length=1, max_length=MAX_BATCH_ROWS)
