"""``GET /metrics``: Prometheus text, computed from the database at each scrape.

A fresh ``CollectorRegistry`` per app (never the process-global one, so two apps in one
process, as in tests, do not collide) holds one collector that reads the database when
scraped (the queries are in ``store.metrics``). Counters are derived from rows, so they
survive restarts and add up across every worker on the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestrator import __version__
from orchestrator.api.state import Api
from orchestrator.domain.stages import STAGING_RUNNER, TEST_RUNNER
from orchestrator.store import control, counters, merges, spend
from orchestrator.store import metrics as figures
from orchestrator.store.schema import PULL_STATES

# Job duration buckets, seconds: from a quick runner to the reaper's hour.
DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class DatabaseCollector(Collector):
    """Every orchestrator metric, read from the database when scraped."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def collect(self) -> Iterator[Metric]:
        with self.api.reader.connect() as conn:
            yield from self._collect(conn)

    def _collect(self, conn: sa.Connection) -> Iterator[Metric]:
        st = self.api.settings
        info = GaugeMetricFamily("orch_info", "The orchestrator's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "orch_uptime_seconds",
            "Seconds since this API started.",
            time.time() - self.api.started_at,
        )
        paused = st.paused or control.is_paused(conn)
        yield GaugeMetricFamily("orch_paused", "1 when no new jobs are claimed.", float(paused))

        by_task = GaugeMetricFamily(
            "orch_tasks", "Tasks by stage and state.", labels=["stage", "state"]
        )
        for stage, state, n in figures.tasks_by_stage_state(conn):
            by_task.add_metric([stage, state], n)
        yield by_task

        depth = figures.queue_depth(conn)
        yield GaugeMetricFamily("orch_queue_depth", "Queued jobs of live tasks.", depth)
        by_state = GaugeMetricFamily("orch_jobs", "Jobs by state.", labels=["state"])
        counts = figures.jobs_by_state(conn)
        for state in ("queued", "running", "finished"):
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state

        finished = CounterMetricFamily(
            "orch_jobs_finished",
            "Finished jobs by stage, agent and outcome (`none`: ended before it ran).",
            labels=["stage", "agent", "outcome"],
        )
        for stage, agent, outcome, n in figures.finished_jobs(conn):
            finished.add_metric([stage, agent, outcome or "none"], n)
        yield finished

        yield self._durations(conn)

        kinds = CounterMetricFamily(
            "orch_transitions", "Task transitions by kind.", labels=["kind"]
        )
        for kind, n in figures.transitions_by_kind(conn):
            kinds.add_metric([kind], n)
        yield kinds

        cost = CounterMetricFamily(
            "orch_llm_cost_usd", "LLM spend (sum of jobs' cost_usd) by agent.", labels=["agent"]
        )
        tokens = CounterMetricFamily(
            "orch_llm_tokens", "LLM tokens by agent and direction.", labels=["agent", "direction"]
        )
        for agent, usd, tin, tout in figures.llm_use_by_agent(conn):
            cost.add_metric([agent], usd)
            tokens.add_metric([agent, "in"], tin)
            tokens.add_metric([agent, "out"], tout)
        yield cost
        yield tokens
        yield from self._budgets(conn)

        alert_family = CounterMetricFamily(
            "orch_alerts",
            "Alerts raised, by kind and severity (each occurrence of an alert counted).",
            labels=["kind", "severity"],
        )
        open_family = GaugeMetricFamily(
            "orch_alerts_open",
            "Open (unresolved) alerts, by kind and severity.",
            labels=["kind", "severity"],
        )
        for kind, severity, raised, still_open in figures.alerts_by_kind(conn):
            alert_family.add_metric([kind, severity], raised)
            open_family.add_metric([kind, severity], still_open)
        yield alert_family
        yield open_family

        yield from self._runners(conn)

        merge = CounterMetricFamily(
            "orch_merge_gate", "The merge gate's counters.", labels=["counter"]
        )
        for name, n in sorted(merges.merge_counters(conn).items()):
            merge.add_metric([name], n)
        yield merge
        yield from self._pulls(conn)

        live = figures.live_workers(conn, since=time.time() - st.job_lease_s)
        yield GaugeMetricFamily("orch_workers", "Workers with a heartbeat within a lease.", live)

    def _budgets(self, conn: sa.Connection) -> Iterator[Metric]:
        """The spend the LLM budgets count, beside the budgets (0: no limit)."""
        st = self.api.settings
        yield GaugeMetricFamily(
            "orch_llm_spend_last_24h_usd",
            "LLM spend of jobs that finished in the last 24 hours (what the day budget counts).",
            spend.day_spend_usd(conn, since=time.time() - spend.DAY_S),
        )
        budgets = GaugeMetricFamily(
            "orch_llm_budget_usd", "LLM budgets in force, USD (0: no limit).", labels=["scope"]
        )
        budgets.add_metric(["day"], st.llm_budget_per_day_usd)
        budgets.add_metric(["task"], st.llm_budget_per_task_usd)
        yield budgets
        by_task = GaugeMetricFamily(
            "orch_llm_task_spend_usd",
            f"LLM spend of the live tasks that spent most (at most {spend.TOP_TASKS}), "
            "all their jobs (what the task budget counts).",
            labels=["task"],
        )
        for t in spend.top_live_task_spend(conn):
            by_task.add_metric([t.key], t.spend.cost_usd)
        yield by_task

    def _runners(self, conn: sa.Connection) -> Iterator[Metric]:
        """The deterministic runners' own verdicts, told apart from what is not theirs."""
        verdicts = CounterMetricFamily(
            "orch_runner_verdicts",
            "Finished jobs a runner ran itself, by its own check's verdict "
            "(SKIPPED: no staging command; `none`: no verdict).",
            labels=["agent", "verdict"],
        )
        merge_failed = CounterMetricFamily(
            "orch_runner_merge_gate_failed",
            "Runner jobs whose own check passed but whose merge gate then failed.",
            labels=["agent"],
        )
        infra = CounterMetricFamily(
            "orch_runner_infra_retries",
            "Re-queues (DEFER) after a tool error of the runner's own process.",
            labels=["agent"],
        )
        fallback = CounterMetricFamily(
            "orch_runner_llm_fallback",
            "Finished jobs of a runner's stage that its LLM fallback did, by verdict.",
            labels=["agent", "verdict"],
        )
        for agent, tally in counters.runner_counters(conn, (TEST_RUNNER, STAGING_RUNNER)).items():
            for verdict, n in sorted(tally.own.by_verdict.items()):
                verdicts.add_metric([agent, verdict], n)
            merge_failed.add_metric([agent], tally.merge_gate_failed)
            infra.add_metric([agent], tally.infra_retries)
            for verdict, n in sorted(tally.llm_fallback.by_verdict.items()):
                fallback.add_metric([agent, verdict], n)
        yield from (verdicts, merge_failed, infra, fallback)

    def _pulls(self, conn: sa.Connection) -> Iterator[Metric]:
        """Pull requests (``land: pr``): what the landing saw, each thing counted once when
        it first saw it (``store.pulls``), and the tasks' pull requests as last read."""
        events = figures.pull_events_by_kind(conn)

        def counted(kind: str) -> int:
            return sum(n for (k, _name), n in events.items() if k == kind)

        yield CounterMetricFamily(
            "orch_pull_requests_opened",
            "Pull requests the landing read for the first time (one per task and number; "
            "one a human opened for the task's branch counts too).",
            counted("opened"),
        )
        yield CounterMetricFamily(
            "orch_pull_requests_merged", "Pull requests the landing merged.", counted("merged")
        )
        failed = CounterMetricFamily(
            "orch_pull_request_checks_failed",
            "Failing checks the landing read, required or not: once per pull request, head "
            "and check (the same check failing again on a new head counts again).",
            labels=["check"],
        )
        for (kind, name), n in sorted(events.items()):
            if kind == "check-failed":
                failed.add_metric([name], n)
        yield failed
        yield CounterMetricFamily(
            "orch_pull_request_changes_requested",
            "Reviews requesting changes the landing read, each review once.",
            counted("changes-requested"),
        )
        by_state = GaugeMetricFamily(
            "orch_pull_requests",
            "Tasks' pull requests by state, as the landing last read them.",
            labels=["state"],
        )
        states = figures.pull_requests_by_state(conn)
        for state in PULL_STATES:
            by_state.add_metric([state], states.get(state, 0))
        yield by_state

    def _durations(self, conn: sa.Connection) -> Metric:
        """A histogram of finished jobs' run times, by stage, bucketed in SQL."""
        family = HistogramMetricFamily(
            "orch_job_duration_seconds", "Run time of finished jobs, by stage.", labels=["stage"]
        )
        for stage, count, total, per_bound in figures.job_durations(conn, DURATION_BUCKETS_S):
            buckets = [(_le(le), n) for le, n in zip(DURATION_BUCKETS_S, per_bound, strict=True)]
            buckets.append(("+Inf", count))
            family.add_metric([stage], buckets, total)
        return family


def _le(value: float) -> str:
    # The spelling client libraries give a finite bucket bound: "30.0".
    return repr(float(value))


def metrics_router(api: Api) -> APIRouter:
    """``GET /metrics`` with a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(api))
    router = api.auth_router()

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
        },
        tags=["status"],
    )
    def metrics() -> Response:
        """Prometheus metrics: jobs, transitions, queue depth, durations, LLM cost and
        budgets, alerts, pull requests."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
