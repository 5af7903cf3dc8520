"""The model file: skops format (never pickle), byte-deterministic, trusted types only.

``skops.io.dump`` names each array of its zip after the array's ``id()``, marks objects with
their ``id()`` and stamps every member with the current time, so two saves of one model differ.
:func:`canonical_skops` rewrites such a file into one form: array and object ids renumbered in
order of first appearance in ``schema.json``, members in that order, each stored uncompressed
with a fixed time and mode. The same model then always gives the same bytes, and ``dvc.lock``
can show that the same inputs gave the same model. ``skops.io.load`` reads the result as usual.
"""

import io
import json
import os
import zipfile
from pathlib import Path

import skops.io

TRUSTED_TYPES = [
    "credit_risk.ml.features.CreditFeatures",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
"""Types beyond skops' defaults that loading our models may create; anything else is refused."""

SCHEMA = "schema.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry
_FILE_MODE = 0o644 << 16


def canonical_skops(data: bytes) -> bytes:
    """The canonical form of a skops file's bytes (see the module docstring)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read(SCHEMA))
        ids: dict[int, int] = {}
        members: dict[str, str] = {}
        _renumber(schema, ids, members)
        unreferenced = set(source.namelist()) - {SCHEMA} - members.keys()
        if unreferenced:
            raise ValueError(f"skops file holds members its schema does not name: {unreferenced}")
        payloads = {new: source.read(old) for old, new in members.items()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as target:
        for name, payload in [*payloads.items(), (SCHEMA, json.dumps(schema, indent=2))]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.create_system, info.external_attr = 3, _FILE_MODE
            target.writestr(info, payload)
    return buffer.getvalue()


def _renumber(node, ids: dict[int, int], members: dict[str, str]) -> None:
    """Replace ``__id__`` values and member ``file`` names, in document order, in place."""
    if isinstance(node, list):
        for item in node:
            _renumber(item, ids, members)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                node[key] = ids.setdefault(value, len(ids) + 1)
            elif key == "file" and isinstance(value, str):
                suffix = Path(value).suffix
                node[key] = members.setdefault(value, f"{len(members) + 1:06d}{suffix}")
            else:
                _renumber(value, ids, members)


def model_file_bytes(model) -> bytes:
    """The canonical skops bytes of a fitted model."""
    return canonical_skops(skops.io.dumps(model))


def save_model(model, path: Path) -> None:
    """Write the fitted pipeline's canonical skops bytes to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(model_file_bytes(model))
    os.replace(temporary, path)


def load_model(path: Path):
    """Read a model file, trusting only :data:`TRUSTED_TYPES` beyond skops' defaults."""
    return skops.io.load(path, trusted=TRUSTED_TYPES)
