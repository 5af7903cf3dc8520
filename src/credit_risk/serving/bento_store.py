"""The BentoML model store the service serves from: its name there, where it is, and the
service's reference to it.

It imports BentoML only: ``bentoml serve``'s own process imports the service module, and with
it this one (scikit-learn and MLflow stay in the workers; see docs/performance.md, memory).
"""

import os
from pathlib import Path

import bentoml

from credit_risk.registry.names import MODEL_NAME

BENTO_MODEL = MODEL_NAME
"""The BentoML store name; each import adds a version."""


def bentoml_store_path() -> Path:
    """The BentoML home whose model store ``credit-risk import`` writes to."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


class ImportedModel(bentoml.models.BentoModel):
    """A service's model from the local BentoML store: where ``credit-risk import`` has not
    put it, an error saying so, not BentoML's attempt to fetch it from BentoCloud."""

    def to_info(self, alias: str | None = None):
        self._require_import()
        return super().to_info(alias)

    def resolve(self, base_path=None):
        self._require_import()
        return super().resolve(base_path)

    def _require_import(self) -> None:
        if self.stored is None:
            raise bentoml.exceptions.NotFound(
                f"credit-risk service: no imported model {self.tag.name} in the BentoML store "
                f"{bentoml_store_path()}; run `credit-risk import` first"
            )
