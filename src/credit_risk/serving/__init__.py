"""Serving: the BentoML service for the Production model, its HTTP schemas and routes, request
grouping, the prediction log and its shipping to MLflow, and the release of a registry version
into the BentoML model store."""
