"""Role prompts: package templates (``agents/prompts/<role>.md``) rendered with Jinja2.

A prompt tells the agent the task, where it works, the artifact it must write (exact path,
keys and allowed values, from ``domain.artifacts`` and ``STAGE_TRANSITIONS``) and, after a
rollback, why the previous attempt failed. A repo may override a role's template by
committing ``.orchestrator/agents/<role>.md``; it is read from the task's worktree, so the
policy is versioned with the code it governs.

Rendering is all or nothing: ``StrictUndefined`` makes a missing variable an error, and any
template error raises ``PromptError`` with the template named, so the job ends
``not-started`` with that reason and no half prompt is ever sent. Templates run in Jinja2's
sandbox: an override comes from the repository (an agent could have written it on an
earlier attempt), so it must not reach Python internals.

Text that is not ours (the task as filed, a failing report an agent may have written) is
data, never instructions: ``task_md`` and ``previous_failure`` reach every template, the
repo's overrides too, already inside a fence that nothing in them can close
(``domain.quoting.fence_text``), so an open fence in a body cannot swallow the
instructions after it, and headings it mimics stay quoted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import sqlalchemy as sa
from jinja2.sandbox import SandboxedEnvironment

from orchestrator import taskdir
from orchestrator.domain import artifacts as A
from orchestrator.domain.quoting import fence_text
from orchestrator.domain.stages import STAGE_TRANSITIONS, Stage
from orchestrator.errors import OrchestratorError
from orchestrator.store import queries
from orchestrator.store.rows import JobRow

__all__ = [
    "MAX_FAILURE_CHARS",
    "MAX_PROMPT_BYTES",
    "OVERRIDE_DIR",
    "ROLES",
    "PromptError",
    "key_docs",
    "previous_failure",
    "render_prompt",
    "template_source",
]

ROLES = ("analyst", "developer", "tester", "deployer", "reviewer")

# Where a repo keeps its own role prompts, relative to its root.
OVERRIDE_DIR = Path(".orchestrator") / "agents"

# The prompt travels as one argv element: Linux caps a single argument at 128 KiB
# (MAX_ARG_STRLEN). Stay well below, and say so, rather than fail at exec time.
MAX_PROMPT_BYTES = 100_000
# A failing report quoted into the next prompt is cut to this many characters.
MAX_FAILURE_CHARS = 20_000
# An override template larger than this is refused (it is policy, not a payload).
MAX_TEMPLATE_BYTES = 64_000


class PromptError(OrchestratorError):
    """A role prompt could not be rendered; the job must not start."""


@dataclass(frozen=True)
class KeyDoc:
    """One verdict key as a prompt shows it."""

    name: str
    choices: str  # what to write after "name: " (e.g. "DONE|FAILED", "<count>")
    success: str | None  # the value that means success, when there is one
    help: str


def key_docs(artifact: str) -> list[KeyDoc]:
    """The verdict keys of ``artifact`` from the contract, ready for a template."""
    spec = A.ARTIFACTS[artifact]
    docs: list[KeyDoc] = []
    for key in spec.keys:
        success = spec.success.get(key.name)
        if key.values is not None:
            choices = "|".join(sorted(key.values))
            help_text = f"one of {', '.join(sorted(key.values))}"
        elif key.integer:
            choices = "<count>"
            help_text = "a whole number (digits only)"
        else:
            choices = "<text>"
            help_text = "free text on one line"
        if success is not None:
            help_text += f"; `{success}` means success"
        docs.append(KeyDoc(key.name, choices, success, help_text))
    return docs


def template_source(role: str, worktree: Path | None) -> tuple[str, str]:
    """(template text, where it came from): the repo's override, else the package's."""
    if role not in ROLES:
        msg = f"no prompt for role {role!r} (roles: {', '.join(ROLES)})"
        raise PromptError(msg)
    if worktree is not None:
        override = worktree / OVERRIDE_DIR / f"{role}.md"
        if override.is_file():
            size = override.stat().st_size
            if size > MAX_TEMPLATE_BYTES:
                msg = f"{OVERRIDE_DIR / (role + '.md')}: {size} bytes, over {MAX_TEMPLATE_BYTES}"
                raise PromptError(msg)
            try:
                text = override.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                msg = f"{OVERRIDE_DIR / (role + '.md')}: cannot read: {exc}"
                raise PromptError(msg) from exc
            return text, f"{OVERRIDE_DIR / (role + '.md')} (repo override)"
    resource = resources.files("orchestrator.agents").joinpath("prompts", f"{role}.md")
    try:
        return resource.read_text(encoding="utf-8"), f"package prompts/{role}.md"
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"package prompts/{role}.md: cannot read: {exc}"
        raise PromptError(msg) from exc


def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # markdown for a model, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# Compiling a role's template took ~10 ms of every prompt (a job's start, the prompt shown by
# `orch`); rendering it takes well under one. Kept by its text: an override that changes is
# other text, compiled anew. A template that does not compile raises and is not kept. A
# compiled template is only read by render(), so jobs on several threads may share it.
@functools.lru_cache(maxsize=32)
def _compiled(text: str) -> jinja2.Template:
    return _environment().from_string(text)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[... cut: {len(text) - limit} more characters]"


def render_prompt(
    role: str,
    stage: Stage,
    task_key: str,
    task_md: str,
    artifact_dir: Path,
    previous_failure: str | None,
    worktree: Path | None,
) -> str:
    """The whole prompt for ``role`` at ``stage``, or ``PromptError``; never a half prompt."""
    text, source = template_source(role, worktree)
    artifact = STAGE_TRANSITIONS[stage].artifact
    context = {
        "role": role,
        "stage": stage.value,
        "task_key": task_key,
        "task_md": fence_text(task_md.strip()),
        "artifact": artifact,
        "artifact_dir": str(artifact_dir),
        "artifact_path": str(artifact_dir / artifact),
        "keys": key_docs(artifact),
        "worktree": str(worktree) if worktree is not None else "",
        "previous_failure": fence_text(_cut(previous_failure.strip(), MAX_FAILURE_CHARS))
        if previous_failure
        else "",
    }
    try:
        template = _compiled(text)
        rendered = template.render(context)
    except jinja2.TemplateSyntaxError as exc:
        msg = f"prompt template {source}: syntax error at line {exc.lineno}: {exc.message}"
        raise PromptError(msg) from exc
    except jinja2.UndefinedError as exc:
        msg = f"prompt template {source}: {exc.message}"
        raise PromptError(msg) from exc
    except jinja2.TemplateError as exc:  # SecurityError and the rest
        msg = f"prompt template {source}: {type(exc).__name__}: {exc}"
        raise PromptError(msg) from exc
    except Exception as exc:  # a filter that raised: still never a half prompt
        msg = f"prompt template {source}: {type(exc).__name__}: {exc}"
        raise PromptError(msg) from exc
    if not rendered.strip():
        msg = f"prompt template {source} rendered empty"
        raise PromptError(msg)
    size = len(rendered.encode("utf-8"))
    if size > MAX_PROMPT_BYTES:
        msg = (
            f"prompt for {role} is {size} bytes, over {MAX_PROMPT_BYTES}: "
            "shorten the task text or the role prompt"
        )
        raise PromptError(msg)
    if "\0" in rendered:
        # A NUL cannot travel in argv (exec would fail with a confusing error).
        msg = f"prompt template {source}: the rendered prompt holds a NUL character"
        raise PromptError(msg)
    return rendered


def previous_failure(conn: sa.Connection, job: JobRow, folder: Path) -> str | None:
    """For a development attempt after a rollback: why, and the failing report."""
    if job.stage != Stage.DEVELOPMENT.value or job.attempt <= 1:
        return None
    history = queries.list_transitions(conn, job.task_id)
    rollbacks = [h for h in history if h.kind == "rollback"]
    if not rollbacks:
        return None
    last = rollbacks[-1]
    parts = [f"- {r}" for r in last.reasons]
    if last.from_stage:
        name = STAGE_TRANSITIONS[Stage(last.from_stage)].artifact
        text = taskdir.read_artifact(folder, name)
        if text:
            parts += ["", f"### {name}", "", text]
    return "\n".join(parts)
