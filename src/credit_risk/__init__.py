"""Reproducible credit-risk scoring: Kaggle "Give Me Some Credit" to a served PD model."""

__version__ = "0.1.0"
