"""The names this project uses in MLflow: experiment, registered model, alias, stage and tags."""

EXPERIMENT_NAME = "credit-risk-prediction"
MODEL_NAME = "credit-risk-model"
PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"
ARCHIVED_STAGE = "Archived"
MODEL_ARTIFACT = "model"
"""The logged model's name within its run."""
PROFILE_ARTIFACT = "reference_profile.json"
"""The training run's reference profile (:mod:`credit_risk.ml.profile`), in the run's root."""

# Tags on training runs (the first three are copied onto their registry versions).
TAG_DATASET_HASH = "dataset_hash"
TAG_MODEL_FINGERPRINT = "model_fingerprint"
TAG_MODEL_SHA256 = "model_sha256"
"""SHA256 of the model's skops file: the DVC output ``models/model.skops`` and the artifact."""
TAG_MODEL_URI = "model_uri"

# Tags on registry versions, set by the register stage or by `credit-risk promote`.
TAG_GATE_DECISION = "gate_decision"
TAG_GATE_REASON = "gate_reason"
TAG_SERVE_THRESHOLD = "serve_threshold"
TAG_SCORE_SCALE = "score_scale"
"""The ``score`` section of params.yaml, as JSON."""

# Tags on the serving runs that receive the prediction log.
TAG_SERVING_MODEL_NAME = "serving_model_name"
TAG_SERVING_MODEL_VERSION = "serving_model_version"
