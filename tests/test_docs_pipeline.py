"""The pipeline side of docs/ as a test (pipeline.md, promotion.md, governance.md,
development.md): their commands work as written. The same check as ``tests/test_docs.py``, in a
file of its own so that it runs on another worker than the documents that serve on ports 3000
and 3001."""

import pytest
import test_docs


@pytest.mark.slow
@pytest.mark.parametrize("document", test_docs.PIPELINE_SIDE, ids=lambda path: path.name)
def test_pipeline_document_commands_work_as_written(document, tmp_path):
    test_docs.run_document(document, tmp_path)
