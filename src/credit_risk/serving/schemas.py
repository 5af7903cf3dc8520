"""Request and response schemas of the HTTP API, generated from the feature contract.

Each applicant field is a JSON number within the contract's bounds; ``null`` only where the
contract allows a missing value. Counts take whole numbers, also written as ``2.0`` (what
pandas writes for a nullable integer column), never ``2.5``. The OpenAPI components are built
here with references that resolve inside one OpenAPI document.
"""

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from typing_extensions import TypedDict  # pydantic needs it for TypedDict on Python 3.11

from credit_risk.ml.contract import FEATURES, Feature

MAX_BATCH_ROWS = 10_000
REF_TEMPLATE = "#/components/schemas/{model}"


def _whole_number(value: float) -> int:
    if isinstance(value, float) and not value.is_integer():  # BentoML's input spec passes ints
        raise ValueError("Input should be a whole number")
    return int(value)


def _field(feature: Feature):
    bounds = Field(ge=feature.minimum, le=feature.maximum, description=feature.description)
    kind = Annotated[float, bounds]
    if feature.integer:
        documented = {
            "type": "integer",
            "minimum": int(feature.minimum),
            "maximum": int(feature.maximum),
            "description": feature.description,
        }
        kind = Annotated[float, bounds, AfterValidator(_whole_number), WithJsonSchema(documented)]
    return kind | None if feature.nullable else kind


APPLICANT_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, title="Applicant")
Applicant = TypedDict("Applicant", {feature.name: _field(feature) for feature in FEATURES})
"""One applicant: the contract's ten features (JSON numbers; nullable ones may be null)."""
Applicant.__pydantic_config__ = APPLICANT_CONFIG
APPLICANT = TypeAdapter(Applicant)
ApplicantInput = create_model(
    "ApplicantInput",
    __config__=APPLICANT_CONFIG,
    **{feature.name: (_field(feature), ...) for feature in FEATURES},
)
"""The same applicant as a model: BentoML's input spec of ``predict`` (its fields are the
API method's arguments, so ``SyncHTTPClient.predict(**applicant)`` sends the bare body)."""


class BatchRequest(BaseModel):
    """``/predict/batch``'s body: ``{"applicants": [...]}``, nothing else."""

    model_config = ConfigDict(extra="forbid", title="BatchRequest")
    applicants: list[Applicant] = Field(min_length=1, max_length=MAX_BATCH_ROWS)


class Reason(TypedDict):
    """An adverse factor of this applicant (a reason code of the contract's table)."""

    code: str
    feature: str
    description: str


class Prediction(TypedDict):
    """One scored applicant: the decision, its probability of default, its credit score and
    up to four reasons, the strongest first (none when nothing lowered the score)."""

    prediction: Literal[0, 1]
    probability: float
    model_version: str
    prediction_id: str
    timestamp: str
    score: int
    reasons: list[Reason]


class BatchResponse(BaseModel):
    """``/predict/batch``'s answer: the predictions in the order of the applicants."""

    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    """Every error answer: what went wrong; for invalid bodies, pydantic's detail per field."""

    error: str
    detail: list[dict] | None = None


def openapi_components() -> dict[str, dict]:
    """The schemas above as OpenAPI components, every ``$ref`` pointing among them."""
    components = {}
    for name, adapter in [
        ("Applicant", APPLICANT),
        ("BatchRequest", TypeAdapter(BatchRequest)),
        ("Prediction", TypeAdapter(Prediction)),
        ("BatchResponse", TypeAdapter(BatchResponse)),
        ("ErrorResponse", TypeAdapter(ErrorResponse)),
    ]:
        schema = adapter.json_schema(ref_template=REF_TEMPLATE)
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    return components
