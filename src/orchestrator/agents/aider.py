"""The ``aider`` backend: aider, one message (``aider --message``), analytics log as evidence.

Plan::

    aider --message=<prompt> --yes-always --no-analytics --analytics-log <home>/...jsonl
          --no-check-update --no-gitignore --no-stream --no-pretty --no-fancy-input
          --no-show-model-warnings --no-detect-urls --no-show-release-notes
          --no-auto-commits --no-dirty-commits --input-history-file <home>/...
          --chat-history-file <home>/... --llm-history-file <home>/... [--model M]

``--message=<prompt>`` in one element, so a prompt starting with ``-`` is never an option.
History files live in the job home, outside the repository (``--no-gitignore``: aider must
not edit the repo's ``.gitignore`` either). aider commits nothing; the orchestrator commits
what it left. Offline hygiene: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (litellm's bundled price
table, not a download) and a non-empty model-info cache in the job home (aider downloads
its own copy when the cache is missing or empty). A git identity in the job home's
``.gitconfig``: without one aider writes a placeholder into the repository's
``.git/config``, which is read-only in the sandbox, and dies. ``OPENAI_API_BASE`` /
``OPENAI_API_KEY`` (or the key of the model's provider) come from the repo's ``--agent-env``.
aider's ``git add`` of a file it creates writes to an index and an object store in the job
home (``GIT_INDEX_FILE``, ``GIT_OBJECT_DIRECTORY``), for the same reason.

Roles: aider edits only files inside the repository, so it cannot write an artifact to the
task folder. It does the developer role only, and the orchestrator writes
``10-dev-report.md`` itself from the evidence, as the ``patch`` backend does.

Parse: aider exits 0 even when every API call failed. Each request to the model is a
``message_send_starting`` event in the analytics log and, once answered, a ``message_send``
event; a model error (litellm's ``APIError`` on a 529, a ``RateLimitError``, an
``InternalServerError`` ...) leaves the request unanswered, after aider's own retries, and
is printed only on its output (``litellm.APIError: APIError: OpenAIException - Overloaded``),
never in the analytics. Success needs every request answered AND a non-empty diff:

- no analytics log, or no ``message_send`` event → ``crashed`` (it never got an answer);
- a request after the first answer left unanswered (the model failed mid-run; aider still
  exits 0) → ``crashed``, with litellm's last error line quoted; nothing is committed and no
  report is written, so the stage is deferred within the infra budget, never a "changed
  nothing" rollback;
- a non-zero exit code → ``crashed`` (it answered but did not finish; fail closed);
- every request answered and a diff → ``completed``, ``dev_status: DONE``;
- every request answered and no diff → ``completed``, ``dev_status: FAILED`` (the gate rolls
  back).

Cost is the sum of the events' ``cost`` (aider prices known models itself); tokens are the
sums of ``prompt_tokens`` and ``completion_tokens``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from orchestrator.agents.common import (
    MAX_COST_USD,
    LlmPlan,
    LlmResult,
    PlanError,
    PlanRequest,
    as_cost,
    json_objects,
    money,
    snippet,
    token_sum,
    tool_error_of,
)
from orchestrator.domain.faults import ApiFault, FaultKind, fault_of_status, status_in
from orchestrator.domain.outcomes import OutcomeKind
from orchestrator.proc_group import Outcome

__all__ = [
    "AIDER_ROLES",
    "AiderResult",
    "model_error",
    "model_fault",
    "parse_aider",
    "plan_aider",
    "unanswered",
]

AIDER_ROLES = frozenset({"developer"})
ANALYTICS_LOG = "aider-analytics.jsonl"
# aider's model-info cache: present and non-empty, so it does not fetch one at start.
MODEL_INFO_CACHE = (".aider", "caches", "model_prices_and_context_window.json")
# aider's repo-map cache directory, made in the repository root: removed after a run so it
# is never committed.
TAGS_CACHE_GLOB = ".aider.tags.cache.v*"
GIT_IDENTITY = "[user]\n\tname = orchestrator (aider job)\n\temail = aider@orchestrator.invalid\n"


def plan_aider(req: PlanRequest) -> LlmPlan:
    """argv, env and files of an aider job (developer role only)."""
    if req.role not in AIDER_ROLES:
        msg = (
            f"aider can only do the developer role, not {req.role}: it edits files inside the "
            "repository only, and the artifact belongs in the task folder; use claude or codex"
        )
        raise PlanError(msg)
    try:
        command = shlex.split(req.settings.aider_command)
    except ValueError as exc:
        msg = f"ORCH_AIDER_COMMAND cannot be split: {exc}"
        raise PlanError(msg) from exc
    if not command:
        msg = "ORCH_AIDER_COMMAND is empty"
        raise PlanError(msg)
    home = req.job_home
    analytics = home / ANALYTICS_LOG
    argv = [
        *command,
        f"--message={req.prompt}",
        "--yes-always",
        "--no-analytics",
        "--analytics-log",
        str(analytics),
        "--no-check-update",
        "--no-gitignore",
        "--no-stream",
        "--no-pretty",
        "--no-fancy-input",
        "--no-show-model-warnings",
        "--no-detect-urls",
        # Every job home is new, so every run is aider's "first run of this version", where
        # it offers its release notes and, told yes (--yes-always), opens them with Python's
        # webbrowser: a console browser on PATH (www-browser, lynx, w3m ...) is started in
        # the job and waited for.
        "--no-show-release-notes",
        "--no-auto-commits",
        "--no-dirty-commits",
        "--input-history-file",
        str(home / "aider.input.history"),
        "--chat-history-file",
        str(home / "aider.chat.history.md"),
        "--llm-history-file",
        str(home / "aider.llm.history"),
    ]
    if req.settings.aider_model:
        argv += ["--model", req.settings.aider_model]
    env = {"HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cache = home.joinpath(*MODEL_INFO_CACHE)
    files = {
        cache: json.dumps({"_orchestrator": "offline: use litellm's bundled table"}),
        # aider writes a placeholder identity into the repository's .git/config when git
        # knows none, and dies on the read-only .git of the sandbox. It commits nothing
        # (--no-auto-commits), so this identity only answers its question.
        home / ".gitconfig": GIT_IDENTITY,
    }
    objects = req.worktree / ".git" / "objects"
    if objects.is_dir():
        # aider stages each file it creates (`git add`): a blob and an index entry, and the
        # repository's .git is read-only in the sandbox. Both go to a store in the job home
        # that reads the repository's objects through an alternate. The orchestrator's
        # commit after the run uses the repository's own index and objects, not these.
        store = home / "aider-git"
        env["GIT_INDEX_FILE"] = str(store / "index")
        env["GIT_OBJECT_DIRECTORY"] = str(store / "objects")
        files[store / "objects" / "info" / "alternates"] = f"{objects}\n"
    return LlmPlan(argv=argv, env=env, files=files, side_output=analytics)


# How aider prints a model error it got from litellm: ``str(exc)`` on a line of its own.
MODEL_ERROR_RE = re.compile(r"^litellm\.[A-Za-z]+:")
RETRYING = "Retrying in "


def unanswered(analytics_log: str | None) -> bool:
    """Whether aider's last request to the model got no answer (``message_send_starting``
    with no ``message_send`` after it): the model failed, whatever aider's exit code."""
    waiting = False
    for event in json_objects(analytics_log or ""):
        name = event.get("event")
        if name == "message_send_starting":
            waiting = True
        elif name == "message_send":
            waiting = False
    return waiting


def model_error(output: str) -> str | None:
    """litellm's last error line on aider's output, with how often aider retried, or None."""
    lines = [line.strip() for line in output.splitlines()]
    errors = [line for line in lines if MODEL_ERROR_RE.match(line)]
    if not errors:
        return None
    retries = sum(1 for line in lines if line.startswith(RETRYING))
    after = f" (after {retries} retries)" if retries else ""
    return f"{snippet(errors[-1])}{after}"


# litellm's exception classes (as aider prints them, ``litellm.<Class>: ...``) by what they
# mean for the task; a class not named here is an outage (the server failed somehow).
_CLASS_KINDS = {
    "AuthenticationError": FaultKind.CREDENTIALS,
    "PermissionDeniedError": FaultKind.CREDENTIALS,
    "BadRequestError": FaultKind.REQUEST,
    "ContextWindowExceededError": FaultKind.REQUEST,
    "ContentPolicyViolationError": FaultKind.REQUEST,
    "NotFoundError": FaultKind.REQUEST,
    "UnprocessableEntityError": FaultKind.REQUEST,
    "UnsupportedParamsError": FaultKind.REQUEST,
}
_CLASS_RE = re.compile(r"^litellm\.([A-Za-z]+):")


def model_fault(said: str | None) -> ApiFault:
    """The kind of the model error aider printed (litellm's class, else the status it
    names); an outage when it says neither, since aider got no answer either way."""
    text = said or "its last request got no answer"
    found = _CLASS_RE.match(text)
    kind = _CLASS_KINDS.get(found.group(1)) if found else None
    status = status_in(text)
    if kind is None and status is not None:
        return fault_of_status(status, text)
    return ApiFault(kind or FaultKind.OUTAGE, text, status)


@dataclass(frozen=True)
class AiderResult:
    """The parse, and the ``dev_status`` the orchestrator writes when it completed."""

    result: LlmResult
    dev_status: str | None


def parse_aider(
    outcome: Outcome,
    analytics_log: str | None,
    *,
    has_diff: bool,
    diff_detail: str = "",
    output: str = "",
) -> AiderResult:
    """aider's outcome, cost and tokens from how it ended, its analytics log and the diff."""
    sends = 0
    exceptions: list[str] = []
    tokens_in = 0
    tokens_out = 0
    cost_sum = 0.0
    priced = False
    for event in json_objects(analytics_log or ""):
        name = event.get("event")
        props = event.get("properties")
        props = props if isinstance(props, dict) else {}
        if name == "message_send":
            sends += 1
            tokens_in = token_sum(tokens_in, props.get("prompt_tokens"))
            tokens_out = token_sum(tokens_out, props.get("completion_tokens"))
            cost = as_cost(props.get("cost"))
            if cost is not None:
                # Each cost is at most MAX_COST_USD, their sum need not be: counted as that much.
                cost_sum = min(cost_sum + cost, MAX_COST_USD)
                priced = True
        elif name == "message_send_exception":
            exceptions.append(str(props.get("exception", "")))
    cost_usd = cost_sum if priced else None
    t_in = tokens_in if sends else None
    t_out = tokens_out if sends else None

    def done(
        kind: OutcomeKind, status: str | None, *reasons: str, fault: ApiFault | None = None
    ) -> AiderResult:
        result = LlmResult(
            kind, list(reasons), cost_usd, t_in, t_out, api_fault=fault, model_calls=sends
        )
        return AiderResult(result, status)

    killed = tool_error_of(outcome, "aider")
    if killed is not None:
        return done(killed.outcome, None, *killed.reasons)
    if analytics_log is None:
        return done(
            OutcomeKind.CRASHED,
            None,
            f"aider left no analytics log (exit code {outcome.exit_code}); fail closed",
            *([f"last output: {snippet(output)}"] if output.strip() else []),
        )
    said = model_error(output)
    if said is None and exceptions:
        said = snippet(exceptions[-1])
    if sends == 0:
        fault = model_fault(said)
        return done(
            OutcomeKind.CRASHED,
            None,
            "aider got no answer from the model (no message_send event)"
            f"{f': {said}' if said else ''}; an API error ({fault.kind.value}), "
            "not the code's fault",
            *([f"last output: {snippet(output)}"] if output.strip() else []),
            fault=fault,
        )
    summary = (
        f"aider: {sends} message(s), tokens in {tokens_in} out {tokens_out}, {money(cost_usd)}"
    )
    if unanswered(analytics_log):
        fault = model_fault(said)
        return done(
            OutcomeKind.CRASHED,
            None,
            f"aider: the model failed after {sends} answer(s): "
            f"{said or 'its last request got no answer'}; an API error ({fault.kind.value}), "
            f"not the code's fault (aider exited {outcome.exit_code})",
            summary,
            fault=fault,
        )
    if outcome.exit_code != 0:
        return done(
            OutcomeKind.CRASHED,
            None,
            f"aider exited with code {outcome.exit_code} after an answer; fail closed",
            summary,
        )
    if not has_diff:
        return done(
            OutcomeKind.COMPLETED,
            "FAILED",
            summary,
            f"aider changed nothing: {diff_detail or 'no diff'}",
        )
    return done(OutcomeKind.COMPLETED, "DONE", summary, f"diff: {diff_detail or 'non-empty'}")
