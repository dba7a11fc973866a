"""The JSON routes: status, queue, tasks and their files, actions, alerts, the kill switch.

Reads go through ``api.reader`` (on SQLite they never wait for the write lock); mutations
go through the task and repo operations (``task_ops``, ``repo_ops``), like the CLI's, with
``api`` as the actor in the history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from orchestrator import repo_ops, task_ops
from orchestrator.api import files, reads
from orchestrator.api import models as M
from orchestrator.api import task_models as TM
from orchestrator.api.errors import ApiError, json_response, responses
from orchestrator.api.state import Api
from orchestrator.domain import artifacts as A
from orchestrator.domain.stages import Stage, State
from orchestrator.errors import NotFoundError, UsageError
from orchestrator.store import control, queries
from orchestrator.store.rows import TaskRow

ACTOR = "api"
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
MAX_TASKS_PAGE = 10_000
DEFAULT_TASKS_PAGE = 100

KeyPath = Annotated[str, PathParam(description="Task key, e.g. DEMO-7.", max_length=40)]


def json_routers(api: Api) -> list[APIRouter]:
    """Every JSON route of the API: ``/health``, which needs no token, and the others, which
    need it (a read: or the dashboard's code) and say so in the schema."""
    router = APIRouter()
    authed = api.auth_router()
    st = api.settings

    @router.get(
        "/health",
        response_model=M.HealthOut,
        responses={503: {"model": M.HealthOut}},
        tags=["status"],
    )
    def health() -> Any:
        """Liveness: the process is up and the database answers."""
        try:
            with api.reader.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            reason = type(exc).__name__
            return JSONResponse({"status": "unavailable", "database": reason}, status_code=503)
        return M.HealthOut(status="ok", database="ok")

    @authed.get("/status", response_model=M.StatusOut, responses=responses(503), tags=["status"])
    def status() -> Response:
        """Version, uptime, settings (secrets masked), kill switches, counts, spend, workers."""
        with api.reader.connect() as conn:
            out = reads.status(
                conn,
                st,
                started_at=api.started_at,
                scheduler=api.scheduler,
                now=time.time(),
                totals=api.totals,
            )
        return json_response(out)

    @authed.get("/queue", response_model=M.QueueOut, responses=responses(422, 503), tags=["status"])
    def queue(
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIST_LIMIT, description="Items per list.")
        ] = DEFAULT_LIST_LIMIT,
    ) -> Response:
        """Queued, running, deferred and blocked work; serial gates; runner and merge counters."""
        now = time.time()
        with api.reader.connect() as conn:
            totals = api.totals.snapshot(conn, now)
            out = reads.queue(conn, st, now=now, limit=limit, totals=totals)
        return json_response(out)

    @authed.get(
        "/tasks", response_model=list[M.TaskOut], responses=responses(404, 422), tags=["tasks"]
    )
    def list_tasks(
        request: Request,
        response: Response,
        repo: Annotated[str | None, Query(max_length=64, description="Only this repo's.")] = None,
        state: Annotated[State | None, Query(description="Only tasks in this state.")] = None,
        stage: Annotated[Stage | None, Query(description="Only tasks at this stage.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_TASKS_PAGE)] = DEFAULT_TASKS_PAGE,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> list[M.TaskOut]:
        """Tasks, oldest first, one page at a time: ``X-Total-Count`` says how many match,
        ``Link`` gives the ``next`` and ``prev`` pages' URLs (RFC 8288)."""
        with api.reader.connect() as conn:
            repo_id = repo_ops.require_repo(conn, repo).id if repo is not None else None
            page, total = reads.list_tasks(
                conn,
                repo_id=repo_id,
                state=state.value if state is not None else None,
                stage=stage.value if stage is not None else None,
                limit=limit,
                offset=offset,
            )
        response.headers["X-Total-Count"] = str(total)
        links = []
        if offset + limit < total:
            nxt = request.url.include_query_params(limit=limit, offset=offset + limit)
            links.append(f'<{nxt}>; rel="next"')
        if offset > 0:
            prev = request.url.include_query_params(limit=limit, offset=max(0, offset - limit))
            links.append(f'<{prev}>; rel="prev"')
        if links:
            response.headers["Link"] = ", ".join(links)
        return page

    @authed.post(
        "/tasks",
        status_code=201,
        response_model=M.NewTaskOut,
        responses=responses(401, 403, 404, 413, 422),
        tags=["tasks"],
    )
    def add_task(body: M.TaskIn) -> M.NewTaskOut:
        """File a task for a repo; its first job is queued."""
        patch = body.patch.encode() if body.patch is not None else None
        new = task_ops.add_task(
            api.engine,
            st,
            body.repo,
            body.title,
            body.body,
            patch,
            after=body.after,
            author=body.author,
        )
        api.wake()
        summary = reads.task_out(new.task, body.repo)
        return M.NewTaskOut(**summary.model_dump(), folder=str(new.folder), after=list(new.after))

    @authed.get(
        "/tasks/{key}",
        response_model=TM.TaskDetailOut,
        responses=responses(404, 422),
        tags=["tasks"],
    )
    def show_task(key: KeyPath) -> TM.TaskDetailOut:
        """A task with its history (and the reasons), jobs, artifacts and pull request."""
        with api.reader.connect() as conn:
            return reads.task_detail(conn, st, api.task(conn, key))

    @authed.get(
        "/tasks/{key}/artifacts/{name}",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},
            **responses(*api.auth_codes(), 404, 422, text=True),
        },
        tags=["tasks"],
    )
    def artifact(
        key: KeyPath,
        name: Annotated[
            str,
            PathParam(
                pattern=A.ARTIFACT_NAME_RE.pattern,
                max_length=80,
                description="An artifact of the contract, e.g. 13-test-report.md.",
            ),
        ],
    ) -> PlainTextResponse:
        """One artifact's text (markdown)."""
        with api.reader.connect() as conn:
            task = api.task(conn, key)
        path = files.artifact_path(st.tasks_dir, task.key, name)
        text = files.read_artifact(path) if path is not None else None
        if text is None:
            raise ApiError(404, f"{task.key} has no artifact {name}")
        return PlainTextResponse(
            text,
            media_type="text/markdown; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    @authed.get(
        "/tasks/{key}/jobs/{job_id}/log",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "The log's tail; with `follow`, server-sent events.",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "text/event-stream": {},
                },
            },
            **responses(*api.auth_codes(), 404, 422, text=True),
        },
        tags=["tasks"],
    )
    def job_log(
        key: KeyPath,
        job_id: Annotated[int, PathParam(ge=1, le=2**31 - 1, description="The job's id.")],
        lines: Annotated[int, Query(ge=1, le=10_000, description="Lines of the tail.")] = 200,
        follow: Annotated[
            bool,
            Query(description="Stream new lines (text/event-stream) until the job finishes."),
        ] = False,
    ) -> Any:
        """The tail of a job's log (argv, masked env, exit code, output); or follow it live."""
        with api.reader.connect() as conn:
            task = api.task(conn, key)
            job = api.job(conn, task, job_id)
        if not follow:
            path = files.job_log(st.tasks_dir, task.key, job)
            if path is None:
                raise ApiError(404, f"job {job.id} of {task.key} has no log (yet)")
            text, _size = files.tail(path, lines)
            return PlainTextResponse(text, headers={"X-Content-Type-Options": "nosniff"})
        if job.state == "queued":
            # A queued job may wait for hours (a deferral, a pause): no stream is held open
            # for it. Follow once it runs.
            raise ApiError(404, f"job {job.id} of {task.key} has not started; no log yet")

        def finished() -> str | None:
            with api.reader.connect() as conn:
                row = queries.get_job(conn, job.id)
            if row is None or row.state == "finished":
                return f"finished: {row.outcome or 'not run'}" if row else "finished"
            return None

        stream = files.follow(
            lambda: files.job_log(st.tasks_dir, task.key, job),
            finished,
            lines=lines,
            stop=api.stopping,
            max_s=st.reaper_max_running_s + 60,
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _action(key: str, act: Callable[[], TaskRow]) -> M.TaskOut:
        # A task in the wrong state for the action is a conflict, not a bad request.
        with api.reader.connect() as conn:
            api.task(conn, key)
        try:
            task = act()
        except NotFoundError as exc:
            raise ApiError(404, str(exc)) from exc
        except UsageError as exc:
            raise ApiError(409, str(exc)) from exc
        api.wake()
        with api.reader.connect() as conn:
            repo = queries.get_repo_by_id(conn, task.repo_id)
        return reads.task_out(task, repo.name if repo else "?")

    action_responses = responses(401, 403, 404, 409, 413, 422)

    @authed.post(
        "/tasks/{key}/cancel",
        response_model=M.TaskOut,
        responses=action_responses,
        tags=["tasks"],
    )
    def cancel(key: KeyPath, body: M.CancelIn | None = None) -> M.TaskOut:
        """Cancel a task; a running job is killed."""
        reason = body.reason if body is not None else ""
        return _action(
            key, lambda: task_ops.cancel_task(api.engine, key, actor=ACTOR, reason=reason)
        )

    @authed.post(
        "/tasks/{key}/retry",
        response_model=M.TaskOut,
        responses=action_responses,
        tags=["tasks"],
    )
    def retry(key: KeyPath, body: M.RetryIn | None = None) -> M.TaskOut:
        """Retry a blocked or deferred task; with a patch it goes back to development, and
        with ``fresh`` onto a worktree rebuilt from current main."""
        patch = body.patch.encode() if body is not None and body.patch is not None else None
        fresh = body is not None and body.fresh
        return _action(
            key,
            lambda: task_ops.retry_task(api.engine, st, key, patch=patch, fresh=fresh, actor=ACTOR),
        )

    @authed.post(
        "/tasks/{key}/approve",
        response_model=M.TaskOut,
        responses=action_responses,
        tags=["tasks"],
    )
    def approve(key: KeyPath, body: M.ApproveIn | None = None) -> M.TaskOut:
        """A human completes a blocked stage (optionally with its artifact); the gates run."""
        data = body.artifact.encode() if body is not None and body.artifact is not None else None
        return _action(
            key, lambda: task_ops.approve_task(api.engine, st, key, artifact=data, actor=ACTOR)
        )

    @authed.get(
        "/alerts", response_model=list[M.AlertOut], responses=responses(422), tags=["status"]
    )
    def alerts(
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Newest first.")] = 50,
        resolved: Annotated[
            bool, Query(alias="all", description="Resolved alerts too, not only open ones.")
        ] = False,
    ) -> list[M.AlertOut]:
        """Open alerts (one per task and kind, with how often it was raised), newest first."""
        with api.reader.connect() as conn:
            return reads.list_alerts(conn, limit, resolved=resolved)

    def _set_paused(paused: bool) -> M.PausedOut:
        with api.engine.begin() as conn:
            control.set_paused(conn, paused, now=time.time())
        api.wake()
        return M.PausedOut(paused=paused or st.paused)

    @authed.post(
        "/pause",
        response_model=M.PausedOut,
        responses=responses(401, 403, 413),
        tags=["control"],
    )
    def pause() -> M.PausedOut:
        """Global kill switch: no worker claims new jobs (running ones finish)."""
        return _set_paused(True)

    @authed.post(
        "/resume",
        response_model=M.PausedOut,
        responses=responses(401, 403, 413),
        tags=["control"],
    )
    def resume() -> M.PausedOut:
        """Let workers claim jobs again (ORCH_PAUSED, if set, still holds)."""
        return _set_paused(False)

    return [router, authed]
