"""The DVC pipeline's stages as functions: ``prepare → fingerprint → train → register``.

Each takes the parsed ``params.yaml`` and returns a one-line summary; ``stages/*.py`` call them
through :func:`credit_risk.cli.run_stage`. Each stage runs in a process of its own, so a stage
module imports scikit-learn or MLflow (a second or two each) only if it uses them.
"""
