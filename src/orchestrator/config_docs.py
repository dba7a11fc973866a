"""``.env.example`` and ``docs/configuration.md``, rendered from the settings declaration.

Every row comes from the fields of ``Settings`` in ``config.py`` (env var, type, default,
description), in declaration order; ``orch config env-example`` and ``orch config docs``
print them, and a test keeps both files in step with the code.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from orchestrator.config import ENV_PREFIX, Settings


def _render_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(env var, type, default, description) for every setting, in declaration order."""
    rows = []
    for field in fields(Settings):
        name = field.name
        if field.default_factory is not MISSING:
            default = "~/.orchestrator" if name == "home" else ""
        else:
            default = _render_default(field.default)
        # The type as written (``from __future__ import annotations``): "int", "Path".
        type_name = str(field.type)
        rows.append((ENV_PREFIX + name.upper(), type_name, default, field.metadata["description"]))
    return rows


def render_env_example() -> str:
    """The text of ``.env.example``: every key, its default and what it does."""
    out = [
        "# orchestrator settings. Every key with its default; generated from",
        "# src/orchestrator/config.py by `orch config env-example` (a test keeps it in sync).",
        "",
    ]
    for env, type_name, default, description in settings_rows():
        out.append(f"# {description} ({type_name})")
        out.append(f"{env}={default}")
        out.append("")
    return "\n".join(out)


def render_configuration_md() -> str:
    """The text of ``docs/configuration.md``, rendered from the settings class."""
    out = [
        "# Configuration",
        "",
        "Every setting is an environment variable (or a line in `.env`). This page is",
        "generated from `src/orchestrator/config.py` by `orch config docs`; a test keeps it",
        "in sync.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    for env, type_name, default, description in settings_rows():
        shown = f"`{default}`" if default else "(empty)"
        out.append(f"| `{env}` | {type_name} | {shown} | {description} |")
    out.append("")
    out.append("Invariants checked at load (a broken one stops start-up with the keys named):")
    out.append("")
    out.append("- every run timeout (`ORCH_AGENT_TIMEOUT_S`, `ORCH_TEST_RUNNER_TIMEOUT_S`,")
    out.append("  `ORCH_STAGING_RUNNER_TIMEOUT_S`, `ORCH_MERGE_RETEST_TIMEOUT_S`) is below")
    out.append("  `ORCH_REAPER_MAX_RUNNING_S`;")
    out.append("- `ORCH_HEARTBEAT_INTERVAL_S` is at most half of `ORCH_JOB_LEASE_S`;")
    out.append("- `ORCH_MAX_PARALLEL_JOBS_PER_REPO` does not exceed `ORCH_MAX_PARALLEL_JOBS`;")
    out.append("- `ORCH_API_HOST` beyond loopback needs `ORCH_API_TOKEN`.")
    out.append("")
    return "\n".join(out)
