"""Run one command in its own process group and make sure nothing it started outlives it.

The only place in the package that starts processes. Stdlib only, and of the rest of the
package only ``masking`` (stdlib only itself: the rule of what a log header masks) and
``private_files`` (stdlib only: the log is made 0600 in a folder made 0700), so it
can be reasoned about (and benchmarked) alone. Callers use the names below; the modules
are one concept each: ``request`` (what to run, what it did), ``spawn`` (``run``: spawn,
watch, stop), ``groups`` (process groups), ``sweep`` (the run marker and the ``/proc``
sweep), ``procfs`` (reading ``/proc``), ``runlog`` (the log file's header and lines).

How a run goes:

1. The child gets a fresh session and process group (``start_new_session=True``), a unique
   marker ``ORCH_RUN_MARKER=<uuid>`` in its environment, stdin from /dev/null, and stdout and
   stderr pointing straight at the log file (no pipe that can fill up and deadlock).
2. A reap loop polls every ~10 ms for: the child's exit, the cancel event, the timeout, and
   (every ~50 ms) the caller's ``poll`` hook.
3. On timeout / cancel / stop reason: SIGTERM to the group, wait ``grace_s``, SIGKILL to the
   group. Then, because ``setsid`` and double forks escape any process group, a *sweep*:
   every process whose ``/proc/<pid>/environ`` holds the marker gets SIGKILL, repeated until
   none is left or a bound is hit (then ``termination_uncertain=True``). Nested runs (the
   orchestrator running its own suite) stay findable through ``ORCH_RUN_MARKER_CHAIN``.
4. After a normal exit the same clean-up runs (``sweep_on_exit``): a daemon left behind by a
   finished suite must not survive it either.

Expected conditions (a timeout, a missing executable, a bad cwd) are values in the returned
``Outcome``, never exceptions.

Limits of the sweep: a process that re-execs itself with an environment stripped of the
marker, or that becomes another user / non-dumpable (its environ unreadable to us), escapes it.
"""

from __future__ import annotations

from orchestrator.proc_group.groups import group_alive, kill_process_group
from orchestrator.proc_group.request import ExecuteRequest, Outcome
from orchestrator.proc_group.spawn import refuse, run
from orchestrator.proc_group.sweep import MARKER_CHAIN_ENV, MARKER_ENV, find_marked, kill_marked

__all__ = [
    "MARKER_CHAIN_ENV",
    "MARKER_ENV",
    "ExecuteRequest",
    "Outcome",
    "find_marked",
    "group_alive",
    "kill_marked",
    "kill_process_group",
    "refuse",
    "run",
]
