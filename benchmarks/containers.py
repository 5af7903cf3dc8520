"""Benchmark the images: size, and build times cold and after a code change (podman or docker).

Copies the files git tracks into a temporary folder and builds each image there: cold, without
the layer cache (only the base image is local; every package is downloaded and installed);
then once more with the cache, untimed, so that it holds this build's layers; then warm, after a
one-line change to a source file (the dependency layers are reused). The service image needs a
Production model: the one of the project's embedded store (run `dvc repro` first) is imported
into a temporary BentoML home. Images are tagged ``:bench`` and removed at the end.

    python benchmarks/containers.py [--engine podman]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from credit_risk.serving.image import build_service_image, container_engine

PROJECT = Path(__file__).resolve().parent.parent
CHANGED_FILE = "src/credit_risk/__init__.py"


def copy_tracked_files(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, target / name)


def timed(build) -> float:
    started = time.perf_counter()
    build()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["docker", "podman"])
    args = parser.parse_args()
    engine = args.engine or container_engine()
    store = PROJECT / "mlflow.db"
    if not store.exists():
        sys.exit(f"{store} is missing: run `dvc repro` first")

    with tempfile.TemporaryDirectory() as tmp:
        copy, home = Path(tmp) / "project", Path(tmp) / "bentoml"
        copy_tracked_files(copy)
        os.environ.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true",
                          MLFLOW_TRACKING_URI=f"sqlite:///{store}")  # fmt: skip
        subprocess.run([str(Path(sys.executable).parent / "credit-risk"), "import"], cwd=copy,
                       check=True, capture_output=True)  # fmt: skip

        def engine_build(tag: str, *options: str):
            def build(no_cache: bool):
                command = [engine, "build", *(["--no-cache"] if no_cache else []), *options]
                subprocess.run([*command, "-t", tag, str(copy)], check=True, capture_output=True)

            return build

        def service_build(tag: str):
            return lambda no_cache: build_service_image(copy, engine, tag, no_cache)

        images = {
            "credit-risk-train:bench": engine_build("credit-risk-train:bench"),
            "credit-risk-mlflow:bench": engine_build(
                "credit-risk-mlflow:bench", "-f", str(copy / "docker/mlflow/Dockerfile")
            ),
            "credit-risk-service:bench": service_build("credit-risk-service:bench"),
        }
        cold = {tag: timed(lambda b=build: b(True)) for tag, build in images.items()}
        for build in images.values():
            build(False)
        with (copy / CHANGED_FILE).open("a") as source:
            source.write("# a code change\n")
        warm = {tag: timed(lambda b=build: b(False)) for tag, build in images.items()}

    print(f"{engine}, {os.cpu_count()} cores; warm = rebuild after a change to {CHANGED_FILE}")
    print(f"{'image':28} {'size':>9} {'cold build':>11} {'warm build':>11}")
    for tag in images:
        size = int(subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", tag],
                                  check=True, capture_output=True, text=True).stdout)  # fmt: skip
        print(f"{tag:28} {size / 1e6:>6.0f} MB {cold[tag]:>9.0f} s {warm[tag]:>9.0f} s")
    subprocess.run([engine, "rmi", *images], check=True, capture_output=True)


if __name__ == "__main__":
    main()
