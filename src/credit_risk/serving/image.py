"""The service image: the imported model's bento, containerized with docker or podman.

``credit-risk containerize`` imports the registry's Production version (as ``credit-risk
import``), then :func:`build_service_image` builds the bento of ``bentofile.yaml`` and runs
``bentoml containerize`` on it, tagging the image ``credit-risk-service:latest`` (what the
compose service ``api`` runs) and with the bento's own tag.
"""

import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

SERVICE_IMAGE = "credit-risk-service:latest"
ENGINES = ("docker", "podman")
ENGINE_OUTPUT_TAIL = 20
"""Lines of a failed build's output shown."""


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
    (``no_cache``: without the engine's layer cache), printing a line as each step starts.
    The engine's output is shown only when it fails: its last lines, on stderr."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    started = time.monotonic()
    _progress("building the bento of bentofile.yaml")
    with chdir(root):
        bento = bentoml.bentos.build_bentofile("bentofile.yaml", build_ctx="src")
    _progress(f"building image {tag} from {bento.tag} with {engine} (a minute or more)")
    # `bentoml containerize` refuses the bento's dockerfile_template unless the temporary folder
    # it builds in lies under the working directory (BentoML issue 5566): work from its parent.
    options = {"no_cache": True} if no_cache else {}
    with chdir(tempfile.gettempdir()), _bentoml_log() as output:
        try:
            built = bentoml.container.build(
                bento.tag, backend=engine, image_tag=(tag, str(bento.tag)), **options
            )
        except BentoMLException as error:
            output.append(str(error))
            built = None
    if built is None:  # BentoML logs most failures and returns None
        print(*output[-ENGINE_OUTPUT_TAIL:], sep="\n", file=sys.stderr)
        reason = output[-1] if output else "no output"
        raise ImageError(f"{engine} could not build {bento.tag}'s image: {reason}")
    seconds = time.monotonic() - started
    return f"built image {tag} (also tagged {bento.tag}) with {engine} in {seconds:.0f} s"


@contextmanager
def _bentoml_log() -> Iterator[list[str]]:
    """The lines BentoML logs meanwhile (the engine's output, warnings, a failure's exception),
    collected instead of shown."""
    logger = logging.getLogger("bentoml")
    lines: list[str] = []
    collector = logging.Handler(logging.INFO)
    collector.emit = lambda record: lines.extend(
        [record.getMessage(), *([str(record.exc_info[1])] if record.exc_info else [])]
    )
    saved = logger.level, logger.propagate
    logger.addHandler(collector)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(collector)
        logger.level, logger.propagate = saved
        lines[:] = [line for text in lines for line in text.splitlines() if line.strip()]


def _progress(step: str) -> None:
    print(f"containerize: {step}", flush=True)
