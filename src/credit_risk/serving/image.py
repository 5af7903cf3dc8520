"""The service image: the imported model's bento, containerized with docker or podman.

``credit-risk containerize`` imports the registry's Production version (as ``credit-risk
import``), then :func:`build_service_image` builds the bento of ``bentofile.yaml`` and runs
``bentoml containerize`` on it, tagging the image ``credit-risk-service:latest`` (what the
compose service ``api`` runs) and with the bento's own tag.
"""

import shutil
import subprocess
import tempfile
from contextlib import chdir
from pathlib import Path

SERVICE_IMAGE = "credit-risk-service:latest"
ENGINES = ("docker", "podman")


class ImageError(RuntimeError):
    """No container engine works, or the image could not be built."""


def container_engine() -> str:
    """The first of docker and podman that is installed and whose ``info`` succeeds."""
    for engine in ENGINES:
        if shutil.which(engine) and _answers(engine):
            return engine
    raise ImageError("no container engine: neither `docker info` nor `podman info` succeeds")


def _answers(engine: str) -> bool:
    try:
        return subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build_service_image(
    root: Path, engine: str, tag: str = SERVICE_IMAGE, no_cache: bool = False
) -> str:
    """Build the bento of ``root``'s ``bentofile.yaml`` and containerize it as ``tag``
    (``no_cache``: without the engine's layer cache)."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    with chdir(root):
        bento = bentoml.bentos.build_bentofile("bentofile.yaml", build_ctx="src")
    # `bentoml containerize` refuses the bento's dockerfile_template unless the temporary folder
    # it builds in lies under the working directory (BentoML issue 5566): work from its parent.
    with chdir(tempfile.gettempdir()):
        try:
            options = {"no_cache": True} if no_cache else {}
            bentoml.container.build(
                bento.tag, backend=engine, image_tag=(tag, str(bento.tag)), **options
            )
        except BentoMLException as error:
            message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            raise ImageError(f"{engine} could not build {bento.tag}'s image: {message}") from None
    return f"built image {tag} (also tagged {bento.tag}) with {engine}"
