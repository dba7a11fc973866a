"""A repo's forge settings: which forge repository it is, how changes land, what files a task.

Stored in ``repos.options`` (``"forge"``: one JSON object; ``"land"``: ``push`` or ``pr``),
checked here before a write and read back as a ``ForgeSettings``. The token is never among
them: only the NAME of the environment variable that holds it (``token_env``), read when a
forge is built (``forge.connect``). Pure: values in, values out, a ``UsageError`` naming
the option for a bad one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import UsageError

__all__ = [
    "DEFAULT_INTAKE_LABEL",
    "DEFAULT_TOKEN_ENV",
    "FORGE_KINDS",
    "LAND_MODES",
    "MERGE_METHODS",
    "ForgeInput",
    "ForgeSettings",
    "check_forge_options",
    "forge_option_changes",
    "forge_settings",
    "land_of",
]

FORGE_KINDS = ("github",)
LAND_MODES = ("push", "pr")
MERGE_METHODS = ("squash", "merge", "rebase")
DEFAULT_API_URLS = {"github": "https://api.github.com"}
# The NAME of the variable holding the token, not a token.
DEFAULT_TOKEN_ENV = "GITHUB_TOKEN"  # noqa: S105
DEFAULT_INTAKE_LABEL = "orch"
DEFAULT_MERGE_METHOD = "squash"
DEFAULT_LAND = "push"
# `--forge none` removes a repo's forge settings.
NO_FORGE = "none"

# GitHub: an owner is letters, digits and single hyphens (at most 39); a repository name
# letters, digits, '.', '_' and '-' (at most 100), never "." or "..".
_OWNER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,100}\Z")
# Upper case only: a variable's NAME, which a token (ghp_..., github_pat_...) never matches,
# so a token pasted here by mistake is refused instead of stored.
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_CHECKS = 50
MAX_CHECK_CHARS = 200
# GitHub's own limit on a label's name.
MAX_LABEL_CHARS = 50


@dataclass(frozen=True)
class ForgeSettings:
    """A repo's forge, as stored: never a token, only where to find one."""

    kind: str
    repo: str
    api_url: str
    token_env: str = DEFAULT_TOKEN_ENV
    # [] means: the checks the forge's branch protection requires (Forge.required_checks).
    required_checks: tuple[str, ...] = ()
    merge_method: str = DEFAULT_MERGE_METHOD
    intake_label: str = DEFAULT_INTAKE_LABEL
    land: str = DEFAULT_LAND

    def as_dict(self) -> dict[str, Any]:
        """As ``orch repo show --json`` and the API show it (the same keys as stored)."""
        return {
            "kind": self.kind,
            "repo": self.repo,
            "api_url": self.api_url,
            "token_env": self.token_env,
            "required_checks": list(self.required_checks),
            "merge_method": self.merge_method,
            "intake_label": self.intake_label,
        }


@dataclass(frozen=True)
class ForgeInput:
    """The forge options a user may give to ``orch repo add`` / ``orch repo set``; None: not
    given. ``required_checks`` holding only empty values clears the list."""

    forge: str | None = None
    repo: str | None = None
    api_url: str | None = None
    token_env: str | None = None
    land: str | None = None
    required_checks: Sequence[str] | None = None
    merge_method: str | None = None
    intake_label: str | None = None

    def given(self) -> bool:
        """Whether any forge option was given."""
        return any(getattr(self, f.name) is not None for f in fields(self))


def check_forge_repo(value: str) -> str:
    """``--forge-repo OWNER/NAME``, checked."""
    owner, sep, name = value.strip().partition("/")
    if not sep or not _OWNER_RE.match(owner) or not _NAME_RE.match(name) or name in (".", ".."):
        msg = f"--forge-repo {value!r}: give OWNER/NAME, e.g. octo-org/demo"
        raise UsageError(msg)
    return f"{owner}/{name}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(value: str) -> str:
    """``--forge-api-url``: https, or http to this machine only; no credentials, query or
    fragment; without a trailing ``/``."""
    text = value.strip()
    problem = _api_url_problem(text)
    if problem is not None:
        msg = f"--forge-api-url {value!r}: {problem}"
        raise UsageError(msg)
    return text.rstrip("/")


def _api_url_problem(text: str) -> str | None:
    if _CONTROL_RE.search(text) or " " in text:
        return "no blanks or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "give an http(s) URL with a host, e.g. https://api.github.com"
    if parts.username is not None or parts.password is not None:
        # It would be stored and shown: the token goes in the environment, never the URL.
        return "no credentials in the URL (the token is read from --forge-token-env)"
    if parts.query or parts.fragment:
        return "no query or fragment"
    if parts.scheme == "http" and not _loopback(parts.hostname):
        # The token is sent with every call: in clear text only to this machine.
        return "plain http only to this machine (127.0.0.1, ::1, localhost); use https"
    return None


def check_token_env(value: str) -> str:
    """``--forge-token-env``: the NAME of an environment variable, never a token."""
    name = value.strip()
    if not _ENV_NAME_RE.match(name):
        msg = (
            f"--forge-token-env: give the NAME of the environment variable that holds the "
            f"token (upper case letters, digits, '_'), e.g. {DEFAULT_TOKEN_ENV}; never the "
            "token itself"
        )
        raise UsageError(msg)
    return name


def _choice(value: str, choices: Sequence[str], option: str) -> str:
    text = value.strip()
    if text not in choices:
        msg = f"{option} {value!r}: give one of {', '.join(choices)}"
        raise UsageError(msg)
    return text


def check_required_checks(values: Sequence[str]) -> list[str]:
    """``--required-checks a,b``: names of checks, without repeats; ``[]`` clears."""
    given = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for raw in given:
        for part in raw.split(","):
            name = part.strip()
            if not name:
                continue
            if len(name) > MAX_CHECK_CHARS or _CONTROL_RE.search(name):
                msg = (
                    f"--required-checks {name[:60]!r}: a check's name is one line of at most "
                    f"{MAX_CHECK_CHARS} characters"
                )
                raise UsageError(msg)
            if name not in out:
                out.append(name)
    if len(out) > MAX_CHECKS:
        msg = f"--required-checks: at most {MAX_CHECKS} checks (got {len(out)})"
        raise UsageError(msg)
    return out


def check_intake_label(value: str) -> str:
    """``--intake-label``: one label name as the forge spells it."""
    label = value.strip()
    if not label or len(label) > MAX_LABEL_CHARS or _CONTROL_RE.search(label):
        msg = (
            f"--intake-label {value!r}: give a label's name, one line of 1 to "
            f"{MAX_LABEL_CHARS} characters"
        )
        raise UsageError(msg)
    return label


def forge_settings(options: Mapping[str, Any] | None) -> ForgeSettings | None:
    """A repo's forge settings from its ``options``; None when it has no forge."""
    opts = options if isinstance(options, Mapping) else {}
    raw = opts.get("forge")
    if not isinstance(raw, Mapping):
        return None
    return ForgeSettings(
        kind=str(raw.get("kind", "")),
        repo=str(raw.get("repo", "")),
        api_url=str(raw.get("api_url") or DEFAULT_API_URLS.get(str(raw.get("kind")), "")),
        token_env=str(raw.get("token_env") or DEFAULT_TOKEN_ENV),
        required_checks=tuple(str(c) for c in raw.get("required_checks") or ()),
        merge_method=str(raw.get("merge_method") or DEFAULT_MERGE_METHOD),
        intake_label=str(raw.get("intake_label") or DEFAULT_INTAKE_LABEL),
        land=land_of(opts),
    )


def land_of(options: Mapping[str, Any] | None) -> str:
    """How a repo's changes land: ``push`` (the merge gate pushes main) or ``pr``."""
    opts = options if isinstance(options, Mapping) else {}
    land = opts.get("land")
    return land if land in LAND_MODES else DEFAULT_LAND


def forge_option_changes(options: Mapping[str, Any] | None, spec: ForgeInput) -> dict[str, Any]:
    """The ``repo.options`` keys (``forge``, ``land``) that ``spec`` sets on top of
    ``options``, every value checked; ``{}`` when no forge option was given.

    A first forge needs ``--forge`` and ``--forge-repo``; later ones change only what is
    given. ``--forge none`` removes the forge (``forge``: None), and with it any ``pr``
    landing, which has nothing to land on then.
    """
    if not spec.given():
        return {}
    opts = options if isinstance(options, Mapping) else {}
    current = opts.get("forge") if isinstance(opts.get("forge"), Mapping) else None
    changes: dict[str, Any] = {}
    land = _choice(spec.land, LAND_MODES, "--land") if spec.land is not None else None
    if spec.forge is not None and spec.forge.strip() == NO_FORGE:
        others = [f.name for f in fields(spec) if f.name not in ("forge", "land")]
        if any(getattr(spec, n) is not None for n in others):
            msg = "--forge none removes the forge: give no other forge option with it"
            raise UsageError(msg)
        if land == "pr":
            msg = "--land pr needs a forge to open pull requests on"
            raise UsageError(msg)
        changes["forge"] = None
        if land is not None or land_of(opts) == "pr":
            changes["land"] = "push"
        return changes
    forge: dict[str, Any] = dict(current) if current is not None else {}
    if spec.forge is not None:
        if spec.forge.strip() not in FORGE_KINDS:
            msg = f"--forge {spec.forge!r}: give one of {', '.join((*FORGE_KINDS, NO_FORGE))}"
            raise UsageError(msg)
        forge["kind"] = spec.forge.strip()
    forge_fields_given = any(
        getattr(spec, f.name) is not None for f in fields(spec) if f.name != "land"
    )
    if forge_fields_given and "kind" not in forge:
        msg = "this repo has no forge yet: give --forge github and --forge-repo OWNER/NAME"
        raise UsageError(msg)
    if spec.repo is not None:
        forge["repo"] = check_forge_repo(spec.repo)
    if spec.api_url is not None:
        forge["api_url"] = check_api_url(spec.api_url) if spec.api_url.strip() else None
    if spec.token_env is not None:
        forge["token_env"] = check_token_env(spec.token_env)
    if spec.required_checks is not None:
        forge["required_checks"] = check_required_checks(spec.required_checks)
    if spec.merge_method is not None:
        forge["merge_method"] = _choice(spec.merge_method, MERGE_METHODS, "--merge-method")
    if spec.intake_label is not None:
        forge["intake_label"] = check_intake_label(spec.intake_label)
    if forge_fields_given:
        if not forge.get("repo"):
            msg = "--forge needs --forge-repo OWNER/NAME (the repository on the forge)"
            raise UsageError(msg)
        changes["forge"] = _complete(forge)
    if land is not None:
        if land == "pr" and "forge" not in changes and current is None:
            msg = "--land pr needs a forge: give --forge github --forge-repo OWNER/NAME"
            raise UsageError(msg)
        changes["land"] = land
    return changes


def _complete(forge: Mapping[str, Any]) -> dict[str, Any]:
    """The forge object as stored: every key, defaults filled in."""
    kind = str(forge["kind"])
    return {
        "kind": kind,
        "repo": str(forge["repo"]),
        "api_url": forge.get("api_url") or DEFAULT_API_URLS[kind],
        "token_env": forge.get("token_env") or DEFAULT_TOKEN_ENV,
        "required_checks": list(forge.get("required_checks") or []),
        "merge_method": forge.get("merge_method") or DEFAULT_MERGE_METHOD,
        "intake_label": forge.get("intake_label") or DEFAULT_INTAKE_LABEL,
    }


def check_forge_options(options: Mapping[str, Any]) -> None:
    """A repo's options written as data (``set_repo_options``), as they are to be stored:
    ``forge`` passes the checks of the CLI's options, and ``land`` is ``pr`` only with a
    forge."""
    if "forge" in options and options["forge"] is not None:
        raw = options["forge"]
        if not isinstance(raw, Mapping):
            msg = "forge must be an object (kind, repo, api_url, token_env, ...)"
            raise UsageError(msg)
        known = set(_complete({"kind": "github", "repo": "o/n"}))
        unknown = sorted(set(raw) - known)
        if unknown:
            msg = f"forge: unknown key(s) {', '.join(unknown)}"
            raise UsageError(msg)
        checks = raw.get("required_checks")
        if checks is not None and (
            not isinstance(checks, list) or not all(isinstance(c, str) for c in checks)
        ):
            msg = "forge.required_checks must be a list of names"
            raise UsageError(msg)
        for key in ("kind", "repo", "api_url", "token_env", "merge_method", "intake_label"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                msg = f"forge.{key} must be text"
                raise UsageError(msg)
        spec = ForgeInput(
            forge=raw.get("kind") or "",
            repo=raw.get("repo") or "",
            api_url=raw.get("api_url"),
            token_env=raw.get("token_env"),
            required_checks=checks,
            merge_method=raw.get("merge_method"),
            intake_label=raw.get("intake_label"),
        )
        forge_option_changes({}, spec)
    if "land" in options:
        land = options["land"]
        if land not in LAND_MODES:
            msg = f"land must be one of {', '.join(LAND_MODES)}"
            raise UsageError(msg)
        if land == "pr" and not isinstance(options.get("forge"), Mapping):
            msg = "land pr needs a forge to open pull requests on"
            raise UsageError(msg)
