"""The artifact contract: every artifact's name and verdict keys, and how keys are read.

An artifact is a numbered markdown file in the task's folder. Its verdict keys are
``key: value`` lines, preferably in YAML front matter. The producer (agent or runner) and
the gate that reads it both take the names and keys from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

TASK = "00-task.md"
ANALYSIS = "03-analysis.md"
DEV_REPORT = "10-dev-report.md"
TEST_REPORT = "13-test-report.md"
COVERAGE = "14-coverage.md"
STAGING_LOG = "15-staging-log.md"
MERGE_REPORT = "16-merge-report.md"
DEPLOY_LOG = "17-deploy-log.md"
MONITOR_REPORT = "18-monitor-report.md"


@dataclass(frozen=True)
class KeySpec:
    """A verdict key: its allowed values (None: free text or a number)."""

    name: str
    values: frozenset[str] | None = None
    integer: bool = False


@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact of the contract."""

    name: str
    title: str
    keys: tuple[KeySpec, ...]
    # The key and value that, alone or with the others, mean success: what a producer
    # writes when its stage succeeded.
    success: Mapping[str, str]
    # Further values of a success key that pass too, each saying how: a stage that had
    # nothing to do and says so (staging_status: SKIPPED, no staging command), so that a
    # report never claims a run that did not happen. Only values the key allows.
    also_success: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, values in self.also_success.items():
            allowed = self.key(key).values if key in self.success else None
            if allowed is None or not values <= allowed:
                msg = f"{self.name}: also_success[{key!r}] must be allowed values of a success key"
                raise ValueError(msg)

    def success_values(self, key: str) -> frozenset[str]:
        """Every value of the success key ``key`` that passes."""
        return frozenset({self.success[key]}) | self.also_success.get(key, frozenset())

    def key(self, name: str) -> KeySpec:
        """The spec of one of this artifact's keys."""
        for k in self.keys:
            if k.name == name:
                return k
        msg = f"{self.name} has no key {name!r}"
        raise KeyError(msg)


def _enum(*values: str) -> frozenset[str]:
    return frozenset(values)


ARTIFACTS: dict[str, ArtifactSpec] = {
    spec.name: spec
    for spec in (
        ArtifactSpec(TASK, "Task", (KeySpec("task"), KeySpec("repo")), success={}),
        ArtifactSpec(
            ANALYSIS,
            "Analysis",
            (KeySpec("analysis_status", _enum("READY", "NEEDS_INFO")),),
            success={"analysis_status": "READY"},
        ),
        ArtifactSpec(
            DEV_REPORT,
            "Development report",
            (KeySpec("dev_status", _enum("DONE", "FAILED")),),
            success={"dev_status": "DONE"},
        ),
        ArtifactSpec(
            TEST_REPORT,
            "Test report",
            (
                KeySpec("result", _enum("PASSED", "FAILED")),
                KeySpec("status", _enum("PASS", "FAIL")),
                KeySpec("failed", integer=True),
            ),
            success={"result": "PASSED", "status": "PASS", "failed": "0"},
        ),
        ArtifactSpec(
            COVERAGE,
            "Coverage",
            (KeySpec("coverage_status", _enum("PASSED", "FAILED")),),
            success={"coverage_status": "PASSED"},
        ),
        ArtifactSpec(
            STAGING_LOG,
            "Staging log",
            (KeySpec("staging_status", _enum("PASSED", "FAILED", "SKIPPED")),),
            success={"staging_status": "PASSED"},
            also_success={"staging_status": _enum("SKIPPED")},
        ),
        ArtifactSpec(
            MERGE_REPORT,
            "Merge report",
            (
                KeySpec(
                    "merge_status", _enum("MERGED", "CONFLICT", "RED", "INFRA", "WAIT", "BLOCKED")
                ),
            ),
            success={"merge_status": "MERGED"},
        ),
        ArtifactSpec(
            DEPLOY_LOG,
            "Deploy log",
            (KeySpec("deploy_status", _enum("SUCCEEDED", "FAILED")),),
            success={"deploy_status": "SUCCEEDED"},
        ),
        ArtifactSpec(
            MONITOR_REPORT,
            "Monitor report",
            (KeySpec("monitor_status", _enum("HEALTHY", "UNHEALTHY")),),
            success={"monitor_status": "HEALTHY"},
        ),
    )
}

# An artifact name a task folder may hold: the contract's names only. ASCII digits (``\d``
# takes any Unicode digit), and matched whole (``fullmatch``: ``$`` alone lets a final
# newline through); the API's path pattern is the same text.
ARTIFACT_NAME_RE = re.compile(r"^[0-9]{2}-[a-z0-9-]+\.md$")

_FENCE_RE = re.compile(r"^\s*(```|~~~)")
# `key: value`, tolerating a list bullet and bold markers around the key.
_KEY_LINE_RE = re.compile(r"^\s*(?:[-*+]\s+)?\**([A-Za-z_][A-Za-z0-9_]*)\**\s*:\s*(.*?)\s*$")


def parse_keys(text: str) -> dict[str, list[str]]:
    """Every ``key: value`` claim in an artifact, front matter and body alike.

    Keys are lower-cased; values are stripped of quotes and backticks. Lines inside fenced
    code blocks are quoted output, not claims, and are skipped. Each key maps to all the
    values it was given, so a reader can see when two lines disagree.
    """
    found: dict[str, list[str]] = {}
    in_fence = False
    for line in text.splitlines():
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = _KEY_LINE_RE.match(line)
        if not m:
            continue
        key = m.group(1).lower()
        value = m.group(2).strip().strip("`").strip("\"'").strip()
        found.setdefault(key, []).append(value)
    return found


# Every character str.splitlines() (and so parse_keys) ends a line at.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _render_value(value: object) -> str:
    text = str(value)
    if any(c in LINE_BREAKS for c in text):
        # A value split in two would be read back as two claims, the second one any key.
        msg = f"artifact key values are one line: {text!r}"
        raise ValueError(msg)
    return text


def render_artifact(name: str, keys: Mapping[str, object], body: str = "") -> str:
    """An artifact's text: YAML front matter with ``keys``, a title, then ``body``.

    Values of the contract's verdict keys are checked here, so a producer can never write
    a value the gate does not know.
    """
    spec = ARTIFACTS[name]
    for key_spec in spec.keys:
        if key_spec.name not in keys:
            continue
        value = str(keys[key_spec.name])
        if key_spec.values is not None and value not in key_spec.values:
            msg = f"{name}: {key_spec.name}={value!r} is not one of {sorted(key_spec.values)}"
            raise ValueError(msg)
        if key_spec.integer and not value.isdigit():
            msg = f"{name}: {key_spec.name}={value!r} is not a count"
            raise ValueError(msg)
    lines = ["---", *(f"{k}: {_render_value(v)}" for k, v in keys.items()), "---", ""]
    lines.append(f"# {spec.title}")
    lines.append("")
    if body:
        # A NUL makes a file "not text", which no gate reads (taskdir.decode_artifact): output
        # quoted in a body (a suite that printed one) must not turn a green report into a FAIL.
        lines.append(body.rstrip("\n").replace("\0", "\ufffd"))
        lines.append("")
    return "\n".join(lines)
