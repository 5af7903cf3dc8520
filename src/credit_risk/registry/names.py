"""The names this project uses in MLflow: experiment, registered model, alias, stage and tags."""

EXPERIMENT_NAME = "credit-risk-prediction"
MODEL_NAME = "credit-risk-model"
PRODUCTION_ALIAS = "production"
CHALLENGER_ALIAS = "challenger"
"""The newest version that passed the gate without being promoted (an experiment, or
``register.promote: manual``); what ``credit-risk compare`` reads by default."""
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

# Tags on registry versions, set by the register stage (the gate's, never changed after) ...
TAG_GATE_DECISION = "gate_decision"
TAG_GATE_REASON = "gate_reason"
GATE_EVIDENCE_TAGS = (
    "gate_compared_with",
    "gate_rows",
    "gate_candidate_auc",
    "gate_production_auc",
    "gate_auc_difference",
    "gate_auc_difference_low",
    "gate_auc_difference_high",
    "gate_confidence",
)
"""The comparison with Production on the candidate's test rows (its version, the number of
rows, both ROC AUCs, their difference and its confidence interval); absent for the first."""
# ... and by every promotion of the version (the latest one's; all are in the history).
TAG_PROMOTED_AT = "promoted_at"
TAG_PROMOTED_BY = "promoted_by"
TAG_PROMOTION_REASON = "promotion_reason"
TAG_PROMOTION_REPLACED = "promotion_replaced"
TAG_PROMOTION_OVERRODE_GATE = "promotion_overrode_gate"
# Tags of the registered model itself: one per change of Production, see
# :mod:`credit_risk.registry.history`.
TAG_PRODUCTION_CHANGE_PREFIX = "production_change."
TAG_SERVE_THRESHOLD = "serve_threshold"
TAG_SCORE_SCALE = "score_scale"
"""The ``score`` section of params.yaml, as JSON."""

# Tags on the serving runs that receive the prediction log.
TAG_SERVING_MODEL_NAME = "serving_model_name"
TAG_SERVING_MODEL_VERSION = "serving_model_version"
# Tags on the run that receives the outcomes taken in (:mod:`credit_risk.serving.outcome_shipping`).
OUTCOMES_RUN = "outcomes"
TAG_OUTCOMES_MODEL_NAME = "outcomes_model_name"
