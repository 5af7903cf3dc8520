"""The README and docs/ as tests: what they tell a user to run works as written.

Every ```` ```sh ```` block of a document is run, in order, in one ``bash`` session (``set -e``,
so every command must succeed), in a fresh copy of the project on which the quick start's
``dvc repro`` has run, with this virtualenv first on ``PATH``. A ```` ```text ```` block right
after a shell block is its expected output: each of its lines must be among the lines the block
printed (stdout and stderr), in the same order; ``…`` stands for any text. A shell block whose
first line is ``# not run by the docs tests: REASON`` is shown to the reader, not run; the
README's quick start is such a block (``.ci/run`` runs it), and the output it shows is checked
against the ``dvc repro`` that prepares every copy.
"""

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import PROJECT, pipeline_env, run

DOCUMENTS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
# Run by tests/test_containers.py, after the tests of the images it builds and runs under the
# same names; beside the other documents (it takes about 5 minutes).
CONTAINERS = PROJECT / "docs" / "containers.md"
# Run by tests/test_docs_pipeline.py, beside the documents here: they serve nothing on the ports
# these use (3000, 3001), so the two files can run at once on two workers.
PIPELINE_SIDE = [
    PROJECT / "docs" / name
    for name in ("pipeline.md", "promotion.md", "governance.md", "development.md")
]
RUN_HERE = [document for document in DOCUMENTS if document not in [CONTAINERS, *PIPELINE_SIDE]]
README_LIMIT = 12 * 1024
NOT_RUN = "# not run by the docs tests:"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MARKER = "@@docs-block {}@@"
QUICK_START_CACHE: list[Path] = []
"""DVC's cache after the quick start in a copy of the project, once per test process."""


@dataclass
class Block:
    """A shell block of a document and the output it shows, if any."""

    line: int
    commands: str
    expected: str | None

    @property
    def runs(self) -> bool:
        return not self.commands.startswith(NOT_RUN)


def shell_blocks(document: Path) -> list[Block]:
    """The ``sh`` blocks of ``document``, each with the ``text`` block right after it."""
    text = document.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    blocks = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        following = fences[index + 1] if index + 1 < len(fences) else None
        between = text[fence.end() : following.start()] if following else ""
        expected = None
        if following and following.group(1) == "text" and "```" not in between:
            expected = following.group(2)
        blocks.append(Block(text.count("\n", 0, fence.start()) + 1, fence.group(2), expected))
    return blocks


def missing_line(expected: str, printed: str) -> str | None:
    """The first line of ``expected`` not found, in order, among the lines ``printed``."""
    lines = [line.rstrip() for line in printed.splitlines()]
    position = 0
    for wanted in filter(None, (line.rstrip() for line in expected.splitlines())):
        pattern = re.compile(".*".join(re.escape(part) for part in wanted.split("…")))
        while position < len(lines) and not pattern.fullmatch(lines[position]):
            position += 1
        if position == len(lines):
            return wanted
        position += 1
    return None


def relative_links(document: Path) -> list[str]:
    """The targets of the document's Markdown links that point inside the repository."""
    targets = LINK.findall(document.read_text(encoding="utf-8"))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def anchors(document: Path) -> set[str]:
    """GitHub's anchors for the document's headings."""
    headings = re.findall(r"^#+ (.+)$", document.read_text(encoding="utf-8"), re.M)
    slugs = set()
    for heading in headings:
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        slugs.add(slug.replace(" ", "-"))
    return slugs


def test_readme_is_a_short_guide():
    size = len((PROJECT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, more than {README_LIMIT}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_resolves(document):
    for target in relative_links(document):
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{document.name}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document.name}: link to {target}: no heading"


def test_every_document_in_docs_is_linked_from_the_readme():
    linked = {(PROJECT / target.partition("#")[0]).resolve() for target in relative_links(
        PROJECT / "README.md")}  # fmt: skip
    for document in DOCUMENTS[1:]:
        assert document.resolve() in linked, f"README.md does not link to docs/{document.name}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_blocks_not_run_say_why(document):
    blocks = shell_blocks(document)
    if document.name == "README.md":
        assert not blocks[0].runs and blocks[0].expected, "the quick start comes first"
        blocks = blocks[1:]
    for block in blocks:
        if not block.runs:
            reason = block.commands.splitlines()[0].removeprefix(NOT_RUN).strip()
            assert reason, f"{document.name}:{block.line}: a block not run must say why"
            checked_elsewhere = reason.startswith("docs/containers.md runs these very commands")
            assert block.expected is None or checked_elsewhere, (
                f"{document.name}:{block.line}: output never checked"
            )


def test_the_readme_compose_block_is_the_one_docs_containers_runs():
    """The README's compose tour is not run twice: its commands are the first block of
    docs/containers.md (run by the docs tests), then `podman-compose down`, which that
    document runs too; the output shown is the one checked there."""
    (readme,) = [b for b in shell_blocks(PROJECT / "README.md") if "podman-compose" in b.commands]
    containers = shell_blocks(PROJECT / "docs" / "containers.md")
    commands = readme.commands.splitlines()
    assert commands[0].startswith(NOT_RUN) and "docs/containers.md" in commands[0]
    assert commands[1:] == [*containers[0].commands.splitlines(), "podman-compose down"]
    assert containers[0].runs and any(
        "podman-compose down" in block.commands.splitlines() for block in containers[1:]
    )
    assert readme.expected == containers[0].expected


def test_missing_line_matches_in_order_with_ellipsis():
    printed = "a first line\nregister: version 2: promoted (x)\nlast\n"
    assert missing_line("register: version …: promoted (…)\nlast", printed) is None
    assert missing_line("last\nregister: …", printed) == "register: …"
    assert missing_line("a first", printed) == "a first"


def copy_of_the_project(folder: Path) -> Path:
    """What git has of the project (tracked and new, unignored files) in a new git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = PROJECT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    run(["git", "init", "-q"], folder)
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "-qm", "clone"], folder)
    return folder


def script(blocks: list[Block]) -> str:
    """One bash script running the blocks in order, a marker line before each."""
    parts = [
        "set -eo pipefail",
        "trap 'status=$?; kill $(jobs -p) 2> /dev/null || true; wait; exit $status' EXIT",
    ]
    for index, block in enumerate(blocks):
        parts += [f"echo '{MARKER.format(index)}'", block.commands]
    return "\n".join(parts) + "\n"


def stop_leftovers(folder: Path) -> None:
    """End every process still running from the copy (servers the document left behind)."""
    for process in psutil.process_iter(["cwd", "cmdline"]):
        try:
            inside = str(folder) in (process.info["cwd"] or "") or any(
                str(folder) in part for part in process.info["cmdline"] or []
            )
            if inside and process.pid != os.getpid():
                process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("document", RUN_HERE, ids=lambda path: path.name)
def test_document_commands_work_as_written(document, tmp_path):
    run_document(document, tmp_path)


def run_document(document: Path, tmp_path: Path) -> None:
    """Run ``document``'s shell blocks in a fresh copy of the project; check what they print."""
    blocks = [block for block in shell_blocks(document) if block.runs]
    if not blocks:
        pytest.skip(f"{document.name} has no shell block to run")
    folder = copy_of_the_project(tmp_path / "project")
    env = pipeline_env(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    cache = folder / ".dvc" / "cache"
    if QUICK_START_CACHE and document.name != "README.md":
        # The reader ran the quick start in this folder, so DVC's cache has its stages' runs:
        # restored, not run again (the register stage runs all the same).
        shutil.copytree(QUICK_START_CACHE[0], cache)
    quick_start = run(["dvc", "repro"], folder, env)
    if not QUICK_START_CACHE:
        QUICK_START_CACHE.append(shutil.copytree(cache, tmp_path / "quick-start-cache"))
    if document.name == "README.md":
        expected = shell_blocks(document)[0].expected
        line = missing_line(expected, quick_start.stdout + quick_start.stderr)
        assert line is None, f"quick start: expected line not printed: {line!r}\n{quick_start}"
    # Only a document that runs the stack takes it down: the project name is compose.yaml's
    # (`credit-risk`), so a `down` after another document would stop a stack running meanwhile.
    uses_compose = any("podman-compose" in block.commands for block in blocks)
    try:
        result = subprocess.run(
            ["bash", "-c", script(blocks)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        stop_leftovers(folder)
        if uses_compose:
            subprocess.run(["podman-compose", "down", "-v"], cwd=folder, env=env,
                           capture_output=True, timeout=300)  # fmt: skip
    outputs = re.split(r"^@@docs-block \d+@@\n", result.stdout, flags=re.M)[1:]
    last = blocks[len(outputs) - 1] if outputs else blocks[0]
    assert result.returncode == 0, (
        f"{document.name}:{last.line}: the block failed (exit {result.returncode}):\n"
        f"{last.commands}\n--- printed:\n{outputs[-1] if outputs else result.stdout}"
    )
    mismatches = []
    for block, printed in zip(blocks, outputs, strict=True):
        line = missing_line(block.expected, printed) if block.expected is not None else None
        if line is not None:
            mismatches.append(
                f"{document.name}:{block.line}: expected output line not printed: {line!r}\n"
                f"{block.commands}\n--- printed:\n{printed}"
            )
    assert not mismatches, "\n\n".join(mismatches)
