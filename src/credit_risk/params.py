"""Read ``params.yaml``, the single place the pipeline's settings live, and check its values."""

import re
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading YAML 1.2 floats such as ``1e-05`` as numbers.

    ``dvc exp run -S`` writes floats that way; plain PyYAML (YAML 1.1) would return strings.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_params(path: str | Path = "params.yaml") -> dict:
    """The whole params file as a dict."""
    path = Path(path)
    with path.open(encoding="utf-8") as stream:
        params = yaml.load(stream, Loader=_Loader)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def decision_threshold(params: dict) -> float:
    """``serve.threshold``: the probability from which the service answers ``prediction=1``."""
    threshold = params["serve"]["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"params.yaml: serve.threshold must be a number, got {threshold!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"params.yaml: serve.threshold must be in (0, 1), got {threshold}")
    return float(threshold)
