"""The one rule of what is a secret: for the job logs, the API, git and the agents.

A variable or setting is a secret by its name: it contains TOKEN, SECRET, PASSWORD, PASSWD,
KEY, CREDENTIAL or WEBHOOK (a webhook URL carries its token in the path), in any case, or
it ends with DATABASE_URL (a database URL carries its password), or the caller names it
(a repo's ``--agent-env`` keys). Over-masking (``KEYBOARD``) is the safe side of this trade.

Each output spells a masked value as it always has: ``****`` in a job log's env header,
``***`` in the API (as SQLAlchemy hides a URL's password). Stdlib only at import time:
``proc_group`` uses it and stays free of third-party imports.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

# Replaces a secret in the API's answers (and a URL's password, by SQLAlchemy's spelling).
MASK = "***"
# Replaces a secret value in the env header of a job's log.
ENV_MASK = "****"

SECRET_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "WEBHOOK")
# DATABASE_URL, ORCH_DATABASE_URL, TEST_DATABASE_URL; not DATABASE_URL_HINT.
DATABASE_URL_NAME = "DATABASE_URL"

_V = TypeVar("_V")


def is_secret_name(name: str, extra: Collection[str] = ()) -> bool:
    """Whether ``name`` (an environment variable or a setting) holds a secret, or may;
    ``extra`` names more secrets, matched exactly."""
    upper = name.upper()
    return (
        name in extra
        or any(part in upper for part in SECRET_PARTS)
        or upper.endswith(DATABASE_URL_NAME)
    )


def mask_env(env: Mapping[str, str], extra_secret_names: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``env`` with every secret's value replaced by ``****`` (a job log's header)."""
    extra = frozenset(extra_secret_names)
    return {name: ENV_MASK if is_secret_name(name, extra) else value for name, value in env.items()}


def without_secrets(env: Mapping[str, _V]) -> dict[str, _V]:
    """A copy of ``env`` without its secrets: what a process must not see at all. Stricter
    than a log's mask by one rule: a name that holds DATABASE_URL anywhere is dropped too
    (git dropped such names before there was one rule), since a process that never sees a
    value needs no case to be made for it."""
    return {
        name: value
        for name, value in env.items()
        if not is_secret_name(name) and DATABASE_URL_NAME not in name.upper()
    }


def masked_url(url: str) -> str:
    """A URL (a database's) with its password replaced by ``***``, in its userinfo and in a
    query parameter a secret's name (libpq takes ``?password=``); ``***`` when unreadable."""
    # Imported here, not at the top: proc_group imports this module and is stdlib only.
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return MASK
    query = {k: MASK if is_secret_name(k) else v for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    # The query is rendered %-quoted: the mask reads as it does in the userinfo.
    return shown.replace("=%2A%2A%2A", f"={MASK}")


def masked_remote(remote: str) -> str:
    """A git remote as we show it: a URL's userinfo (``user:token@``, or a token alone as
    the user, which GitHub takes) replaced by ``***``; a remote's name, a path or an
    scp-like ``git@host:path`` as it is (none can hold a password)."""
    scheme, sep, rest = remote.partition("://")
    if not sep or not scheme:
        return remote
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return remote
    host = authority.rpartition("@")[2]
    return f"{scheme}://{MASK}@{host}{slash}{path}"


def masked_setting(name: str, value: object) -> object:
    """A setting's value as the API shows it: a database URL without its password, any other
    secret as ``***`` (an empty one as ``""``: unset is not a secret), the rest as it is."""
    if name.upper().endswith(DATABASE_URL_NAME):
        return masked_url(str(value)) if value else ""
    if is_secret_name(name):
        return MASK if value else ""
    return value
