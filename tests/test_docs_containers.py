"""docs/containers.md as a test: its commands (images, the compose stack, a rollout) work as
written. The same check as ``tests/test_docs.py``, in a file of its own so that it runs on
another worker than the other documents."""

import pytest
import test_docs


@pytest.mark.slow
def test_containers_document_commands_work_as_written(tmp_path):
    test_docs.run_document(test_docs.CONTAINERS, tmp_path)
