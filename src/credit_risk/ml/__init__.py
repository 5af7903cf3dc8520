"""The ML core: feature contract, data, features, model, evaluation and fingerprints.

Nothing here knows about DVC, MLflow or BentoML; the pipeline, the registry and the service
build on it.
"""
