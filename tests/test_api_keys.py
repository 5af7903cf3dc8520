"""API keys: the keys file and ``credit-risk keys`` (fast), then a real `bentoml serve` with keys.

The service tests run the session's served project (:func:`conftest.project`) with a keys file
of their own; each checks real HTTP answers, the prediction log and the server's output.
"""

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest
from conftest import CREDIT_RISK, Server, pipeline_env, run
from test_service import serve_refused

from credit_risk.ml.contract import EXAMPLE_APPLICANT as SAMPLE
from credit_risk.serving.api_keys import RELOAD_SECONDS, ApiKeys, KeysFileError, parse_keys
from credit_risk.serving.prediction_log import read_records

PROTECTED = [("GET", "/model/info"), ("GET", "/metrics"), ("POST", "/predict"),
             ("POST", "/predict/batch")]  # fmt: skip
OPEN = ["/", "/health", "/readyz", "/livez"]
MADE_KEYS: list[str] = []
"""Every key the tests made: none may appear in any output."""


def keys(*args: str, file: Path, check: bool = True):
    """``credit-risk keys ARGS --file FILE``."""
    return run([CREDIT_RISK, "keys", *args, "--file", str(file)], file.parent, check=check)


def added_key(file: Path, name: str) -> str:
    """A new key named ``name`` in ``file``: the one line ``keys add`` prints on stdout."""
    result = keys("add", name, file=file)
    assert f"added {name!r} to {file}" in result.stderr
    (key,) = result.stdout.splitlines()
    MADE_KEYS.append(key)
    return key


def test_keys_add_list_revoke(tmp_path):
    file = tmp_path / "api-keys"
    first, second = added_key(file, "scoring-app"), added_key(file, "scoring-app-2")
    assert first != second and len(first) > 40
    text = file.read_text()
    assert first not in text and second not in text
    assert f"scoring-app sha256:{hashlib.sha256(first.encode()).hexdigest()} " in text
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    listed = keys("list", file=file).stdout.splitlines()
    assert [line.split()[0] for line in listed] == ["scoring-app", "scoring-app-2"]
    assert first not in keys("list", file=file).stdout

    inode = file.stat().st_ino
    assert (
        keys("revoke", "scoring-app", file=file).stdout
        == f"keys: revoked 'scoring-app' in {file}\n"
    )
    assert file.stat().st_ino != inode  # replaced, not rewritten in place
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["api-keys"]  # no temporary file left
    assert [line.split()[0] for line in keys("list", file=file).stdout.splitlines()] == [
        "scoring-app-2"
    ]


def test_a_replaced_keys_file_keeps_its_permissions(tmp_path):
    """A keys file opened up for a container's user (it holds only hashes) stays so."""
    file = tmp_path / "api-keys"
    added_key(file, "first")
    file.chmod(0o644)
    added_key(file, "second")
    keys("revoke", "first", file=file)
    assert stat.S_IMODE(file.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "scoring-app"], "already has a key 'scoring-app': revoke it"),
        (["revoke", "nobody"], "has no key 'nobody'"),
        (["add", "two words"], "bad key name 'two words'"),
    ],
)
def test_keys_refusals_are_one_line(tmp_path, args, message):
    file = tmp_path / "api-keys"
    added_key(file, "scoring-app")
    before = file.read_bytes()
    result = keys(*args, file=file, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("keys: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and file.read_bytes() == before


def test_keys_file_from_the_environment_or_an_error(tmp_path):
    file = tmp_path / "api-keys"
    env = pipeline_env(CREDIT_RISK_API_KEYS_FILE=str(file))
    key = run([CREDIT_RISK, "keys", "add", "app"], tmp_path, env).stdout.strip()
    assert hashlib.sha256(key.encode()).hexdigest() in file.read_text()
    result = run([CREDIT_RISK, "keys", "list"], tmp_path, pipeline_env(), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "keys: error: no keys file: set CREDIT_RISK_API_KEYS_FILE or give --file\n"
    )


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"ok {DIGEST} 2026-01-01T00:00:00Z\nbroken {DIGEST}\n", "line 2: 2 fields"),
        (f"# keys\n\nbad/name {DIGEST} 2026-01-01T00:00:00Z\n", "line 3: the name is not"),
        ("app sha256:1234 2026-01-01T00:00:00Z\n", "line 1: the hash is not"),
        (f"app {DIGEST} x\napp {DIGEST} y\n", "line 2: the name of line 1 again"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, text, message):
    with pytest.raises(KeysFileError, match=f"^{tmp_path / 'keys'}, {message}"):
        parse_keys(text, tmp_path / "keys")


def test_a_service_reads_a_changed_file_and_keeps_the_last_good_keys(tmp_path):
    file = tmp_path / "api-keys"
    first = added_key(file, "first").encode()
    accepted = ApiKeys(file)
    assert accepted.name_of(first) == "first" and accepted.name_of(b"wrong") is None
    assert accepted.name_of(b"") is None and accepted.error is None
    second = added_key(file, "second").encode()
    keys("revoke", "first", file=file)
    time.sleep(RELOAD_SECONDS)
    assert accepted.name_of(second) == "second" and accepted.name_of(first) is None
    with file.open("a") as stream:
        stream.write("not a key line\n")
    time.sleep(RELOAD_SECONDS)
    assert accepted.name_of(second) == "second"
    assert accepted.error.startswith(f"{file}, line 3: ") and "keeping the 1 keys" in accepted.error


@pytest.fixture(scope="module")
def keyed(project, tmp_path_factory):
    """A `bentoml serve` with a keys file holding the key ``scoring-app``; yields (server, key
    file, key, prediction log)."""
    folder, env = project
    directory = tmp_path_factory.mktemp("keyed")
    file = directory / "api-keys"
    key = added_key(file, "scoring-app")
    log = directory / "predictions"
    server = Server(
        env | {"CREDIT_RISK_API_KEYS_FILE": str(file), "CREDIT_RISK_PREDICTION_LOG": str(log)},
        folder,
    )
    yield server, file, key, log
    server.stop()


def ask(server: Server, method: str, path: str, key: str | None = None, **headers: str):
    """One request; ``key`` sent as ``Authorization: Bearer``."""
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    body = {"applicants": [SAMPLE]} if path == "/predict/batch" else SAMPLE
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30,
                         json=body if method == "POST" else None)  # fmt: skip


def wait_for_status(server: Server, path: str, key: str, status: int) -> None:
    """Until ``path`` answers ``status`` to ``key`` (the file is re-read within a second)."""
    deadline = time.monotonic() + 10
    while (answer := ask(server, "GET", path, key)).status_code != status:
        assert time.monotonic() < deadline, (answer.status_code, answer.text)
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_key_a_wrong_key_or_a_bad_header_is_401(keyed, method, path):
    server, _, key, _ = keyed
    answers = [
        ask(server, method, path),
        ask(server, method, path, "crk_" + "x" * 43),
        ask(server, method, path, key[:-1]),
        ask(server, method, path, Authorization=f"Basic {key}"),
        ask(server, method, path, Authorization=key),
    ]
    for answer in answers:
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    assert {answer.text for answer in answers} == {
        '{"error":"a valid API key is required: Authorization: Bearer <key>"}'
    }


@pytest.mark.slow
def test_a_valid_key_is_answered_and_its_name_logged(keyed):
    server, _, key, log = keyed
    for method, path in PROTECTED:
        assert ask(server, method, path, key).status_code == 200, path
    for path in OPEN:
        assert ask(server, "GET", path).status_code == 200, path
    one = ask(server, "POST", "/predict", key).json()
    batch = ask(server, "POST", "/predict/batch", key).json()["predictions"]
    records = {record["prediction_id"]: record for record in read_records(log)}
    assert records[one["prediction_id"]]["api_key"] == "scoring-app"
    assert records[batch[0]["prediction_id"]]["api_key"] == "scoring-app"
    health = ask(server, "GET", "/health").json()
    assert health["status"] == "ok" and health["api_keys"]["required"] is True
    assert "scoring-app" not in json.dumps(health)  # /health is open: it names no key


@pytest.mark.slow
def test_rotation_revocation_and_a_broken_file_without_restart(keyed):
    server, file, key, _ = keyed
    successor = added_key(file, "scoring-app-2")
    wait_for_status(server, "/model/info", successor, 200)
    assert ask(server, "GET", "/model/info", key).status_code == 200  # both, while rotating
    keys("revoke", "scoring-app", file=file)
    wait_for_status(server, "/model/info", key, 401)
    assert ask(server, "POST", "/predict", key).status_code == 401
    assert ask(server, "POST", "/predict", successor).status_code == 200

    good = file.read_text()
    file.write_text(good + "torn line\n")
    deadline = time.monotonic() + 10
    while (health := ask(server, "GET", "/health").json())["status"] != "degraded":
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["api_keys"]["error"].startswith(f"{file}, line ")
    assert "scoring-app" not in health["api_keys"]["error"]  # /health is open: no names
    assert ask(server, "POST", "/predict", successor).status_code == 200  # the last good keys
    file.write_text(good)
    os.chmod(file, 0o600)
    deadline = time.monotonic() + 10
    while ask(server, "GET", "/health").json()["api_keys"]["error"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.slow
def test_no_key_appears_in_a_log_a_response_or_the_output(keyed):
    """After the other service tests: no key made so far is in an answer, a file of the
    prediction log, the keys file or the server's output."""
    server, file, _, log = keyed
    texts = [ask(server, method, path, key).text for method, path in PROTECTED for key in MADE_KEYS]
    texts += [ask(server, "GET", path).text for path in [*OPEN, "/openapi.json"]]
    texts += [path.read_text(errors="replace") for path in log.rglob("*") if path.is_file()]
    texts += [file.read_text(), server.output.read_text(errors="replace")]
    assert len(MADE_KEYS) >= 2 and not [key for key in MADE_KEYS if any(key in t for t in texts)]


@pytest.mark.slow
def test_serve_refuses_a_bad_or_missing_keys_file(project, tmp_path):
    folder, env = project
    file = tmp_path / "api-keys"
    file.write_text(f"app {DIGEST} 2026-01-01T00:00:00Z\napp-2 sha256:00 2026-01-01T00:00:00Z\n")
    line = serve_refused(env | {"CREDIT_RISK_API_KEYS_FILE": str(file)}, folder)
    assert line.endswith(f"refusing to start: {file}, line 2: the hash is not sha256: and 64 "
                         "hex digits")  # fmt: skip
    missing = tmp_path / "no-such-file"
    line = serve_refused(env | {"CREDIT_RISK_API_KEYS_FILE": str(missing)}, folder)
    assert f"no keys file {missing}" in line and "credit-risk keys add NAME" in line


@pytest.mark.slow
def test_development_serve_without_keys_says_so(project, tmp_path):
    folder, env = project
    server = Server(env | {"CREDIT_RISK_PREDICTION_LOG": str(tmp_path / "predictions")}, folder)
    try:
        health = ask(server, "GET", "/health").json()
        answer = ask(server, "POST", "/predict")
    finally:
        server.stop()
    assert answer.status_code == 200
    assert health["api_keys"] == {
        "required": False,
        "status": "off: CREDIT_RISK_API_KEYS_FILE is not set: every route is open "
        "(for development only)",
    }
    lines = [line for line in server.output.read_text().splitlines() if "API keys" in line]
    assert lines == [
        "credit-risk service: no API keys: CREDIT_RISK_API_KEYS_FILE is not set: every route is "
        "open (for development only)"
    ]
    record = read_records(tmp_path / "predictions")[-1]
    assert record["api_key"] is None
