"""The API token: ``ORCH_API_TOKEN`` when set, else the file ``<ORCH_HOME>/api-token``.

`orch init` and `orch serve` make the file when it is missing: 32 random bytes, URL-safe,
mode 0600, written to a private temporary file and linked into place, so two processes
starting at once end with one token and neither reads a half-written file. A file that
others could read, a symlink or a file of another user is refused, not used: its token may
be known. The token is never logged nor printed; only where it is.

The dashboard's code (``login_code``), which its link carries as the password of HTTP Basic
authentication, is derived from the token (HMAC-SHA256 of a purpose): it reads, never
changes, and a new token revokes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.private_files import private_dir

TOKEN_FILE = "api-token"  # noqa: S105 (a file name, not a secret)
ENV_NAME = "ORCH_API_TOKEN"
# The user name of the dashboard's link (any name is taken: the password is what counts).
DASHBOARD_USER = "orch"

# What a bearer token may hold: visible ASCII, no spaces (it travels in a header). The
# file's is ours, 43 characters; how long ORCH_API_TOKEN is, is its owner's choice.
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,512}")


@dataclass(frozen=True)
class ApiToken:
    """The token in force and where it comes from (``ORCH_API_TOKEN`` or the file's path)."""

    value: str = field(repr=False)
    source: str
    created: bool = False

    @property
    def where(self) -> str:
        """``ORCH_API_TOKEN``, or ``in <path>``: for messages, never the token itself."""
        return self.source if self.source == ENV_NAME else f"in {self.source}"


def token_path(settings: Settings) -> Path:
    """Where the token file of this home is."""
    return settings.home / TOKEN_FILE


def load_token(settings: Settings) -> ApiToken:
    """``ORCH_API_TOKEN`` if set, else the token file, made first when missing.

    A ``ConfigError`` names what is wrong with a file that must not be used.
    """
    if settings.api_token:
        if not _TOKEN_RE.fullmatch(settings.api_token):
            msg = f"{ENV_NAME} must be at most 512 visible ASCII characters, without spaces"
            raise ConfigError(msg)
        return ApiToken(settings.api_token, ENV_NAME)
    path = token_path(settings)
    try:
        created = False if os.path.lexists(path) else _create(path)
    except OSError as exc:
        msg = f"cannot make the API token {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    return ApiToken(_read(path), str(path), created)


def _create(path: Path) -> bool:
    """Make the token file; False when another process made it first."""
    private_dir(path.parent)
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # link, not rename: it fails when the file exists, so a token another process
        # already made (and maybe handed out) is never replaced.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _read(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        msg = f"cannot read the API token {path}: {exc.strerror} (a symlink is refused)"
        raise ConfigError(msg) from exc
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            msg = f"the API token {path} is not a regular file"
            raise ConfigError(msg)
        if info.st_uid != os.getuid():
            msg = f"the API token {path} belongs to another user; remove it to make a new one"
            raise ConfigError(msg)
        if info.st_mode & 0o077:
            msg = (
                f"the API token {path} can be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}): remove it, and a new one is made"
            )
            raise ConfigError(msg)
        value = f.read(1024).strip()
    if not _TOKEN_RE.fullmatch(value):
        msg = f"the API token {path} is malformed: remove it, and a new one is made"
        raise ConfigError(msg)
    return value


def _derived(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def login_code(token: str) -> str:
    """The dashboard's code: the password of its link's HTTP Basic authentication. Not the
    token: it reads, never changes (a mutation needs the token)."""
    return _derived(token, "orch dashboard link")


def dashboard_link(base_url: str, token: ApiToken | None) -> str:
    """The URL that opens the dashboard in a browser: ``http://orch:<code>@host:port/``, or
    the board itself when the server takes no token (``--insecure-no-token``).

    The browser answers the server's Basic challenge with the code and keeps it for this
    origin alone (scheme, host and port), as no cookie can be kept: a browser sends the
    cookies of 127.0.0.1 to all its ports, so to any job listening on one."""
    if token is None:
        return f"{base_url}/"
    scheme, sep, rest = base_url.partition("://")
    return f"{scheme}{sep}{DASHBOARD_USER}:{login_code(token.value)}@{rest}/"
