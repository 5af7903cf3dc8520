"""Read ``params.yaml``, the single place the pipeline's settings live."""

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
