"""A model server that plays a developer for every conversation it gets, claude's
(Anthropic Messages) and codex's (OpenAI Responses) alike, so several tasks can run at once
against one server: it reads the workspace and the artifact path from the prompt and
counts the tool results so far. ``fault`` makes every agent request fail instead; ``loop``
makes the agent read a file forever. Loopback only, as ``fake_model_server``.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import fake_model_server as F

from orchestrator.domain import artifacts as A

# A looping agent's answers come this long after each request: the spend meter (which looks
# every ~50 ms) reads each answer before the next one, also on a loaded machine: with the
# CLI's own time per turn added, 0.1 s still kept every job within one call of its cap at a
# load average of 4 (three calls are allowed).
LOOP_THINK_S = 0.15
WORKSPACE = re.compile(r"task's workspace \(([^)]+)\)")
ARTIFACT = re.compile(r"write the file `([^`]+)`")


class AgentServer(F.FakeModelServer):
    """A model server that plays a developer for every conversation it gets: write
    ``hello-<KEY>.txt`` in the workspace, write the dev report, say done."""

    def __init__(self) -> None:
        super().__init__([])
        self.fault: F.Turn | None = None
        # True: the agent never finishes, it reads a file again and again (a tool loop).
        self.loop = False
        # The fault applies only once this many agent requests were answered.
        self.fault_after = 0
        self.answered = 0
        self.faults_sent = 0
        self._body = threading.local()

    def record(self, rec: F.Recorded) -> None:
        super().record(rec)
        self._body.value = rec.body

    def take_turn(self) -> F.Turn:
        with self._lock:
            fault = self.fault
            if fault is not None and self.answered >= self.fault_after:
                self.faults_sent += 1
                return fault
            self.answered += 1
        return developer_turn(self._body.value or {}, loop=self.loop)


def developer_turn(body: dict[str, Any], *, loop: bool = False) -> F.Turn:
    """The next turn of a developer conversation, claude's or codex's."""
    if "input" in body:
        return _codex_turn(body, loop=loop)
    messages = body.get("messages") or []
    wt, artifact = _paths(json.dumps(messages[:1]))
    done = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for block in m["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    )
    if loop:
        return F.tool("Read", {"file_path": str(wt / "README.md")}, delay_s=LOOP_THINK_S)
    if done == 0:
        return F.tool("Write", {"file_path": str(wt / f"hello-{wt.name}.txt"), "content": "hi\n"})
    if done == 1:
        return F.tool("Write", {"file_path": artifact, "content": dev_report("DONE")})
    return F.text("Done.")


def _paths(prompt: str) -> tuple[Path, str]:
    workspace, artifact = WORKSPACE.search(prompt), ARTIFACT.search(prompt)
    assert workspace is not None, prompt[:500]
    assert artifact is not None, prompt[:500]
    return Path(workspace.group(1)), artifact.group(1)


def _codex_turn(body: dict[str, Any], *, loop: bool) -> F.Turn:
    items = body.get("input") or []
    user = [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
    wt, artifact = _paths(json.dumps(user))
    done = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")
    if loop:
        return F.tool("exec_command", {"cmd": "cat README.md"}, delay_s=LOOP_THINK_S)
    if done == 0:
        return F.tool("exec_command", {"cmd": f"printf 'hi\\n' > {wt / f'hello-{wt.name}.txt'}"})
    if done == 1:
        report = dev_report("DONE").replace("'", "'\\''")
        return F.tool("exec_command", {"cmd": f"printf '%s' '{report}' > {artifact}"})
    return F.text("Done.")


def dev_report(status: str = "DONE") -> str:
    return A.render_artifact(A.DEV_REPORT, {"dev_status": status}, "scripted by the fake model")
