"""API keys of the scoring API: the keys file, its checks, and the middleware that asks for them.

The file named by ``CREDIT_RISK_API_KEYS_FILE`` holds one line per key, ``NAME sha256:HEX
ADDED``: a name, the SHA-256 of the key and when it was added; never a key. ``#`` starts a
comment line. ``credit-risk keys add|revoke|list`` maintain it (see docs/security.md).

A key is 32 random bytes (256 bits) from :mod:`secrets`. A key that cannot be guessed needs no
salt and no slow key-derivation function: those protect low-entropy passwords against guessing,
and no guess of a 256-bit key succeeds, with or without the stored hash. So a plain SHA-256 is
stored, and checking a request costs one hash and one constant-time comparison per key.
"""

import functools
import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from starlette.responses import JSONResponse

KEYS_FILE_ENV = "CREDIT_RISK_API_KEYS_FILE"
ALLOW_ANONYMOUS_ENV = "CREDIT_RISK_ALLOW_ANONYMOUS"
KEY_PREFIX = "crk_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', the first a letter or digit"
DIGEST_PATTERN = re.compile(r"sha256:([0-9a-f]{64})")
FILE_MODE = 0o600
RELOAD_SECONDS = 1.0
"""A running service looks at the keys file at most this often (its inode, size and mtime)."""
OPEN_PATHS = frozenset(["/", "/health", "/livez", "/readyz", "/healthz"])
"""Routes answered without a key (probes, basic status); every other route needs one."""
DOCUMENTATION_PATHS = frozenset(["/docs", "/docs.json", "/openapi.json", "/schema.json"])
"""The API's description (``/schema.json`` for BentoML's clients), also open: it holds no data."""
SCOPE_KEY = "api_key"
"""Where the middleware leaves the caller's key name in the ASGI scope."""
UNAUTHORIZED = JSONResponse(
    {"error": "a valid API key is required: Authorization: Bearer <key>"},
    status_code=401,
    headers={"WWW-Authenticate": 'Bearer realm="credit-risk"'},
)


class KeysFileError(ValueError):
    """The keys file cannot be read or has a bad line; the message names the file and line."""


@dataclass(frozen=True)
class StoredKey:
    """One line of the keys file."""

    name: str
    digest: str
    added: str


def new_key() -> str:
    """A fresh key: :data:`KEY_PREFIX` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest_of(key: bytes) -> str:
    """The hex SHA-256 of a key, as the keys file stores it."""
    return hashlib.sha256(key).hexdigest()


def keys_file(given: Path | None = None) -> Path:
    """``given``, else the file named by ``CREDIT_RISK_API_KEYS_FILE``."""
    if given is not None:
        return given
    if not os.environ.get(KEYS_FILE_ENV):
        raise KeysFileError(f"no keys file: set {KEYS_FILE_ENV} or give --file")
    return Path(os.environ[KEYS_FILE_ENV])


def parse_keys(text: str, path: Path) -> list[StoredKey]:
    """The keys of a keys file's ``text``; :class:`KeysFileError` naming ``path`` and the line
    of the first bad line, not what it holds (``/health``, open to anyone, shows it)."""
    keys: dict[str, StoredKey] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        where = f"{path}, line {number}"
        if len(fields) != 3:
            raise KeysFileError(f"{where}: {len(fields)} fields, not NAME sha256:HEX ADDED")
        name, digest, added = fields
        if not NAME_PATTERN.fullmatch(name):
            raise KeysFileError(f"{where}: the name is not {NAME_RULE}")
        if not (found := DIGEST_PATTERN.fullmatch(digest)):
            raise KeysFileError(f"{where}: the hash is not sha256: and 64 hex digits")
        if name in keys:
            raise KeysFileError(f"{where}: the name of line {lines[name]} again")
        keys[name], lines[name] = StoredKey(name, found[1], added), number
    return list(keys.values())


def read_keys(path: Path) -> list[StoredKey]:
    """The keys in the file at ``path`` (none if it does not exist yet)."""
    try:
        return parse_keys(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise KeysFileError(f"cannot read the keys file {path}: {error}") from None


def write_keys(path: Path, keys: list[StoredKey]) -> None:
    """Replace the file at ``path`` with ``keys``, atomically (temporary file, fsync, rename).
    A new file is readable by its owner only; a replaced one keeps its permissions (e.g. made
    readable for a container's user, docs/containers.md)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = FILE_MODE
    text = "# credit-risk API keys: NAME sha256:HASH ADDED (credit-risk keys add|revoke|list)\n"
    text += "".join(f"{key.name} sha256:{key.digest} {key.added}\n" for key in keys)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), mode)
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add_key(path: Path, name: str) -> str:
    """Store the hash of a new key named ``name`` in the file at ``path``; the key."""
    if not NAME_PATTERN.fullmatch(name):
        raise KeysFileError(f"bad key name {name!r}: a name is {NAME_RULE}")
    keys = read_keys(path)
    if any(key.name == name for key in keys):
        raise KeysFileError(f"{path} already has a key {name!r}: revoke it, or choose another name")
    key = new_key()
    added = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_keys(path, [*keys, StoredKey(name, digest_of(key.encode()), added)])
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key named ``name`` from the file at ``path``."""
    keys = read_keys(path)
    if not any(key.name == name for key in keys):
        raise KeysFileError(f"{path} has no key {name!r}")
    write_keys(path, [key for key in keys if key.name != name])


class ApiKeys:
    """The keys a running service accepts, read again when the file changes (checked at most
    every :data:`RELOAD_SECONDS`); a file that became unreadable or bad keeps the last good
    keys, and :meth:`status` says so."""

    def __init__(self, path: Path):
        self.path = path
        self.keys: list[tuple[bytes, str]] = []  # (SHA-256, name)
        self.error: str | None = None
        self.signature: tuple | None = None
        self.checked_at = float("-inf")
        self.reload()

    def refresh(self) -> None:
        """:meth:`reload` if the last look at the file is :data:`RELOAD_SECONDS` old."""
        if time.monotonic() - self.checked_at >= RELOAD_SECONDS:
            self.reload()

    def reload(self) -> None:
        """Read the file again if its inode, size or modification time changed."""
        self.checked_at = time.monotonic()
        try:
            status = self.path.stat()
            signature = (status.st_ino, status.st_size, status.st_mtime_ns)
            if signature == self.signature:
                return
            keys = parse_keys(self.path.read_text(encoding="utf-8"), self.path)
        except (OSError, UnicodeDecodeError, KeysFileError) as error:
            self.error = f"{error}; keeping the {len(self.keys)} keys read before"
            return
        self.keys = [(bytes.fromhex(key.digest), key.name) for key in keys]
        self.signature, self.error = signature, None

    def name_of(self, key: bytes) -> str | None:
        """The name of ``key`` if it is one of the keys, else None: its hash compared with
        every key's in constant time."""
        self.refresh()
        digest = hashlib.sha256(key).digest()
        found = None
        for stored, name in self.keys:
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def status(self) -> dict:
        """The ``api_keys`` part of ``/health`` (no names: it is open to anyone)."""
        self.refresh()
        return {"required": True, "file": str(self.path), "ok": self.error is None,
                "error": self.error}  # fmt: skip


def anonymous_reason() -> str | None:
    """Why the service runs without keys (no keys file configured), or None if it has keys."""
    if os.environ.get(KEYS_FILE_ENV):
        return None
    if os.environ.get(ALLOW_ANONYMOUS_ENV) == "1":
        return f"{ALLOW_ANONYMOUS_ENV}=1 and no {KEYS_FILE_ENV}: every route is open"
    return f"{KEYS_FILE_ENV} is not set: every route is open (for development only)"


@functools.cache
def configured_keys() -> ApiKeys | None:
    """This process's keys (``CREDIT_RISK_API_KEYS_FILE``), or None when it runs without."""
    return None if anonymous_reason() else ApiKeys(Path(os.environ[KEYS_FILE_ENV]))


def keys_status() -> dict:
    """The ``api_keys`` part of ``/health``."""
    keys = configured_keys()
    return keys.status() if keys else {"required": False, "status": f"off: {anonymous_reason()}"}


def start_up_message(in_bento: bool) -> str:
    """The line ``bentoml serve`` prints about keys; :class:`KeysFileError` to refuse to start:
    the keys file is missing or bad, or a bento has no keys and anonymous use was not allowed."""
    reason = anonymous_reason()
    if reason is None:
        path = Path(os.environ[KEYS_FILE_ENV])
        if not path.is_file():
            raise KeysFileError(
                f"no keys file {path} ({KEYS_FILE_ENV}): create it with `credit-risk keys add NAME`"
            )
        count = len(read_keys(path))
        return f"credit-risk service: API keys required, {count} in {path}"
    if in_bento and os.environ.get(ALLOW_ANONYMOUS_ENV) != "1":
        raise KeysFileError(
            f"no API keys: set {KEYS_FILE_ENV} to a keys file (`credit-risk keys add NAME`), or "
            f"{ALLOW_ANONYMOUS_ENV}=1 to serve without keys"
        )
    return f"credit-risk service: no API keys: {reason}"


def bearer_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The key of an ``Authorization: Bearer <key>`` header, else empty."""
    for header, value in headers:
        if header == b"authorization":
            scheme, _, key = value.partition(b" ")
            return key.strip() if scheme.lower() == b"bearer" else b""
    return b""


class ApiKeyAuth:
    """ASGI middleware: every route but :data:`OPEN_PATHS` and the documentation needs a key
    when keys are configured; the key's name goes to the route as ``scope["api_key"]``."""

    def __init__(self, app):
        self.app = app
        self.keys = configured_keys()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (
            self.keys is None
            or scope["type"] not in ("http", "websocket")
            or path in OPEN_PATHS
            or path in DOCUMENTATION_PATHS
            or path.startswith("/static_content/")
        ):
            await self.app(scope, receive, send)
            return
        name = self.keys.name_of(bearer_key(scope["headers"]))
        if name is not None:
            scope[SCOPE_KEY] = name
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await UNAUTHORIZED(scope, receive, send)
