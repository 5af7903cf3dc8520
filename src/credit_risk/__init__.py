"""Reproducible credit-risk scoring: Kaggle "Give Me Some Credit" to a served PD model.

The ML core is in ``ml``, the DVC stages in ``pipeline``, the MLflow side in ``registry``, the
BentoML service in ``serving``; ``cli`` is the ``credit-risk`` command.
"""
