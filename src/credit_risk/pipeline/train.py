"""Stage ``train``: fit the model Pipeline on the train split, evaluate it on the test split,
profile the training applicants and the model's answers on them (the drift reference)."""

from threadpoolctl import threadpool_limits

from credit_risk.ml.contract import FEATURE_NAMES, TARGET
from credit_risk.ml.evaluation import classification_metrics, curves
from credit_risk.ml.fingerprints import model_fingerprint
from credit_risk.ml.model import build_model, predict_default_probability
from credit_risk.ml.model_file import save_model
from credit_risk.ml.profile import build_profile, profile_bytes
from credit_risk.ml.scorecard import ScoreScale, assess
from credit_risk.pipeline.paths import (
    METRICS,
    MODEL,
    MODEL_INFO,
    PLOTS,
    REFERENCE_PROFILE,
    read_splits,
    write_json,
)
from credit_risk.registry.store import check_server, project_root, tracking_uri


def train(params: dict) -> str:
    """Fit, save the model and its fingerprint, write metrics, plot data and the profile.

    First, the tracking server the ``register`` stage needs must answer: an unreachable one
    fails the pipeline now, not after training.
    """
    check_server(tracking_uri(project_root()))
    settings = params["train"]
    train_rows, test_rows = read_splits()
    model = build_model(settings)
    with threadpool_limits(limits=int(settings["threads"])):
        model.fit(train_rows.loc[:, FEATURE_NAMES], train_rows[TARGET])
    probability = predict_default_probability(model, test_rows.loc[:, FEATURE_NAMES])
    features = train_rows.loc[:, FEATURE_NAMES]
    scale = ScoreScale.from_params(params["score"])
    answers = assess(model, features.to_numpy("float64"), scale)

    save_model(model, MODEL)
    fingerprint = model_fingerprint(probability)
    write_json(MODEL_INFO, {"model": settings["model"], "model_fingerprint": fingerprint})
    labels, bins = test_rows[TARGET].to_numpy(), int(settings["calibration_bins"])
    metrics = classification_metrics(labels, probability, bins)
    write_json(METRICS, metrics)
    for name, records in curves(labels, probability, bins).items():
        write_json(PLOTS / f"{name}.json", records)
    REFERENCE_PROFILE.write_bytes(profile_bytes(build_profile(features, *answers)))
    return (
        f"{settings['model']}: test ROC AUC {metrics['roc_auc']:.4f}, "
        f"calibration error {metrics['calibration_error']:.4f}"
    )
