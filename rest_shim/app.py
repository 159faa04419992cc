"""The Starlette app that speaks spiff-arena's connector-proxy dialect."""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from rest_shim import _metrics
from rest_shim._auth_flow import AuthFlow
from rest_shim._catalog import Catalogue, CommandSpec
from rest_shim._jobs import CannotRedeliver, JobBackend, JobsBusy, JobState, JobsUnavailable, NewJob
from rest_shim._openapi import openapi_document
from rest_shim._proxy_options import prefers_async, split_proxy_options
from rest_shim._reply import render_reply
from rest_shim._status import HTTP_STATUS, envelope, error_envelope
from server import correlation, json_values
from server.admission import Admission, Ticket
from server.errors import ProxyBusy
from server.invocation import Invoker
from server.metrics import exposition
from server.oauth import OAuth2Handler

__all__ = ["API_KEY_HEADER", "AccessLog", "create_app", "metrics_exposition", "replace_catalogue"]

logger = logging.getLogger(__name__)

API_KEY_HEADER = "spiff-connector-proxy-api-key"
_UNAUTHORIZED = b'{"error":"Unauthorized"}'
_LIVE = b'{"ok":true}'
_READY = b'{"ready":true}'
_DEFAULT_JOB_LIMIT = 100
_MAX_JOB_LIMIT = 1000
_REQUEST_ID = correlation.REQUEST_ID_HEADER.encode()

AccessLog = Callable[[str, int, str, float, str], None]
"""Told of each ``/v1/do`` answer: the command id (``unknown`` for none), the HTTP status, the
envelope's ``error_code`` (``""`` when none), the seconds it took and the request id. Never the
parameters."""


class _JSONResponse(Response):
    media_type = "application/json"
    error_code = ""  # the envelope's, for the metrics


class _Unauthorized(_JSONResponse):
    error_code = "Unauthorized"

    def __init__(self) -> None:
        super().__init__(_UNAUTHORIZED, status_code=401)


def _dumps(value: Any) -> bytes:
    return json_values.dumps(value).encode()


def _reply(status: int, payload: dict[str, Any]) -> Response:
    response = _JSONResponse(_dumps(payload), status_code=status)
    error = payload.get("error")
    if isinstance(error, dict):
        response.error_code = str(error.get("error_code", ""))
    return response


def _retry_after(response: Response, seconds: float) -> Response:
    response.raw_headers.append((b"retry-after", str(max(1, math.ceil(seconds))).encode()))
    return response


def _busy(exc: ProxyBusy) -> Response:
    """503 ``ProxyBusy`` with ``Retry-After``: the call was not admitted."""
    response = _reply(503, error_envelope(503, exc.error_code, exc.message))
    return _retry_after(response, exc.retry_after or 1.0)


class _TooLarge(Exception):
    pass


class ProxyEndpoints:
    """The routes' behaviour; one instance per app, holding the catalogue and the invoker."""

    def __init__(
        self,
        catalogue: Catalogue,
        invoker: Invoker,
        *,
        api_key: str | None,
        command_timeout: float,
        max_body_bytes: int,
        jobs: JobBackend | None = None,
        path_prefix: str = "",
        upstreams: Callable[[], list[dict[str, Any]]] | None = None,
        readiness: Callable[[], list[str]] | None = None,
        access_log: AccessLog | None = None,
        metrics: bool = True,
        admission: Admission | None = None,
        auth_flow: AuthFlow | None = None,
    ) -> None:
        self.auth_flow = auth_flow or AuthFlow()
        self.jobs = jobs
        self.admission = admission
        self.access_log = access_log
        self.metrics_on = metrics
        self.readiness_problems = readiness
        self.path_prefix = path_prefix
        self.upstreams_view = upstreams
        self.replace_catalogue(catalogue)
        self.invoker = invoker
        self.api_key = api_key.encode() if api_key is not None else None
        self.command_timeout = command_timeout
        self.max_body_bytes = max_body_bytes

    def replace_catalogue(self, catalogue: Catalogue) -> None:
        """Serves ``catalogue`` from now on (the upstreams' commands changed)."""
        openapi_body = _dumps(openapi_document(catalogue.commands.values()))
        self.catalogue, self.openapi_body = catalogue, openapi_body
        if self.jobs is not None:
            self.jobs.use_catalogue(catalogue)

    def _authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        given = request.headers.get(API_KEY_HEADER, "").encode()
        return hmac.compare_digest(given, self.api_key)

    def _jobs_for(self, request: Request) -> JobBackend | Response:
        """The job backend for a ``/v1/jobs`` call, or its refusal: 401 without the API key, 404
        when this proxy runs no jobs."""
        if not self._authorized(request):
            return _Unauthorized()
        if self.jobs is None:
            return _reply(404, _plain_error("NotFound", "This proxy runs no jobs."))
        return self.jobs

    async def liveness(self, request: Request) -> Response:
        return _JSONResponse(_LIVE)

    async def readiness(self, request: Request) -> Response:
        """``GET /readiness``: 200 while this process should get traffic; 503 naming each reason
        when it should not (draining, upstreams not yet discovered, job store unavailable). No
        API key, like liveness: probes carry none."""
        problems = list(self.readiness_problems()) if self.readiness_problems is not None else []
        if self.jobs is not None:
            problem = await self.jobs.readiness_problem()
            if problem is not None:
                problems.append(problem)
        if not problems:
            return _JSONResponse(_READY)
        message = "Not ready: " + "; ".join(problems)
        return _reply(503, {"ready": False, "problems": problems, **_plain_error("NotReady", message)})

    async def commands(self, request: Request) -> Response:
        if not self._authorized(request):
            return _Unauthorized()
        return _JSONResponse(self.catalogue.commands_body)

    async def openapi(self, request: Request) -> Response:
        if not self._authorized(request):
            return _Unauthorized()
        return _JSONResponse(self.openapi_body)

    async def auths(self, request: Request) -> Response:
        if not self._authorized(request):
            return _Unauthorized()
        return _JSONResponse(self.catalogue.auths_body)

    async def auth_start(self, request: Request) -> Response:
        """``GET /v1/auth/{connector}/{auth}``: a browser sent on to the OAuth 2.0 provider."""
        handler = self._oauth2_handler(request)
        return await self.auth_flow.start(request, handler, self.path_prefix)

    async def auth_callback(self, request: Request) -> Response:
        """``GET /v1/auth/{connector}/{auth}/callback``: the provider's answer, sent on to spiff-arena."""
        handler = self._oauth2_handler(request)
        return await self.auth_flow.finish(request, handler, self.path_prefix)

    def _oauth2_handler(self, request: Request) -> OAuth2Handler | None:
        return self.catalogue.oauth2.get(f"{request.path_params['connector']}/{request.path_params['auth']}")

    async def upstreams(self, request: Request) -> Response:
        """``GET /v1/upstreams``: each gRPC server fronted, its state and its commands."""
        if not self._authorized(request):
            return _Unauthorized()
        view = self.upstreams_view() if self.upstreams_view is not None else []
        return _reply(200, {"upstreams": view})

    async def typeahead(self, request: Request) -> Response:
        """spiff-arena's typeahead endpoint (no API key: the backend sends none here).

        Answers the typeahead command's body, a JSON array, or a JSON error; never HTML.
        """
        spec = self.catalogue.typeahead
        if spec is None:
            return _reply(404, _plain_error("NotFound", "This proxy serves no typeahead."))
        body: dict[str, Any] = {
            "category": request.path_params["category"],
            "prefix": request.query_params.get("prefix", ""),
        }
        if request.query_params.get("limit"):
            body["limit"] = request.query_params["limit"]
        decoded = spec.decoder.decode(body)
        if decoded.message is None:
            problems = "; ".join(f"{v.field} {v.description}" for v in decoded.violations)
            return _reply(400, _plain_error("InvalidParameters", f"Invalid typeahead query: {problems}."))
        reply = await self.invoker.invoke(spec.full_method, decoded.message, self.command_timeout)
        if reply.failure is not None:
            status = HTTP_STATUS.get(reply.failure.code, 500)
            return _reply(status, _plain_error(reply.failure.error_code, reply.failure.message))
        results = spec.layout.command_response(reply.response, 200)["body"]
        return _JSONResponse(_dumps([] if results is None else results))

    async def _read_body(self, request: Request, ticket: Ticket | None) -> bytes:
        """The body, at most ``max_body_bytes`` of it; bytes beyond what ``ticket`` holds
        (a body without Content-Length, or longer than it said) are added to it as they come."""
        # Straight from the ASGI channel: small bodies arrive in one message, and this path
        # is hot enough for Request.stream()'s async generator to show up in profiles.
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await request.receive()
            if event["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            if ticket is not None and size > ticket.bytes:
                ticket.grow(size - ticket.bytes)
            chunks.append(chunk)
            if not event.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def do(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id = correlation.accept_request_id(request.headers.get(correlation.REQUEST_ID_HEADER))
        token = correlation.bind(request_id)
        if self.metrics_on:
            _metrics.command_started()
        spec = self.catalogue.find(request.path_params["connector"], request.path_params["command"])
        command = spec.id if spec is not None else "unknown"  # a label: the catalogue's ids only
        try:
            response = await self._do(request, spec)
        except BaseException:
            if self.metrics_on:
                _metrics.command_crashed(command)
            if self.access_log is not None:
                self.access_log(command, 500, "Internal", time.perf_counter() - started, request_id)
            raise
        finally:
            correlation.unbind(token)
        response.raw_headers.append((_REQUEST_ID, request_id.encode()))
        error_code = getattr(response, "error_code", "")
        seconds = time.perf_counter() - started
        if self.metrics_on:
            _metrics.command_answered(command, response.status_code, error_code, seconds)
        if self.access_log is not None:
            self.access_log(command, response.status_code, error_code, seconds, request_id)
        return response

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus' text format, API-key protected like the rest; the key may
        also come as ``Authorization: Bearer <key>``, which Prometheus' scrape configs send."""
        if not (self._authorized(request) or self._bearer_authorized(request)):
            return _Unauthorized()
        body, content_type = await self.metrics_exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    def _bearer_authorized(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if self.api_key is None or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.api_key)

    async def metrics_exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics, the jobs by state read now, in the format
        ``accept`` asks for, and its content type."""
        if self.jobs is not None:
            # Unavailable: the gauge keeps its last values; readiness reports the outage.
            with suppress(JobsUnavailable):
                _metrics.job_counts(await self.jobs.counts())
        return exposition(accept)

    async def _do(self, request: Request, spec: CommandSpec | None) -> Response:
        if not self._authorized(request):
            return _Unauthorized()
        if spec is None:
            connector = request.path_params["connector"]
            command = request.path_params["command"]
            return _reply(
                404,
                error_envelope(
                    404, "command_not_found", f"There is no command {connector}/{command} on this proxy."
                ),
            )
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else 0
        if size > self.max_body_bytes:
            return self._too_large()
        if self.admission is None:
            return await self._admitted(request, spec, None)
        try:
            ticket = self.admission.admit(size)
        except ProxyBusy as exc:
            return _busy(exc)
        try:
            return await self._admitted(request, spec, ticket)
        finally:
            ticket.release()

    def _too_large(self) -> Response:
        limit = f"{self.max_body_bytes} bytes"
        return _reply(
            413, error_envelope(413, "PayloadTooLarge", f"The request body is larger than {limit}.")
        )

    async def _admitted(self, request: Request, spec: CommandSpec, ticket: Ticket | None) -> Response:
        try:
            raw = await self._read_body(request, ticket)
        except ProxyBusy as exc:
            return _busy(exc)
        except _TooLarge:
            return self._too_large()
        except ClientDisconnect:
            # The caller hung up mid-body: nothing ran and nobody is left to answer; not an error.
            logger.info("client left during the body of %s", spec.id)
            gone = _JSONResponse(b"", status_code=499)
            gone.error_code = "ClientDisconnected"
            return gone
        try:
            body = json_values.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _reply(
                400, error_envelope(400, "InvalidJson", f"The request body is not valid JSON: {exc}.")
            )
        if not isinstance(body, dict):
            kind = type(body).__name__
            return _reply(
                400,
                error_envelope(
                    400, "InvalidParameters", f"The request body must be a JSON object, not {kind}."
                ),
            )
        options = split_proxy_options(body)
        if options.problem is not None:
            message = f"Invalid parameters for {spec.id}: {options.problem}"
            return _reply(400, error_envelope(400, "InvalidParameters", message, options.logs))
        prefer_async = prefers_async(request.headers.getlist("prefer"))
        run_async = spec.long_running or options.run_async or prefer_async
        return await self._run(spec, body, options.logs, run_async=run_async, prefer_async=prefer_async)

    async def _run(
        self,
        spec: CommandSpec,
        body: dict[str, Any],
        logs: list[str],
        *,
        run_async: bool = False,
        prefer_async: bool = False,
    ) -> Response:
        decoded = spec.decoder.decode(body)
        logs += [f"Ignored parameter {name!r}: {spec.id} has no such parameter." for name in decoded.ignored]
        if decoded.message is None:
            problems = "; ".join(f"{v.field} {v.description}" for v in decoded.violations)
            message = f"Invalid parameters for {spec.id}: {problems}."
            return _reply(400, error_envelope(400, "InvalidParameters", message, logs))
        if run_async:
            return await self._accept(spec, decoded.message.SerializeToString(), body, logs, prefer_async)
        reply = await self.invoker.invoke(spec.full_method, decoded.message, self.command_timeout)
        status, payload = render_reply(spec, reply, [*logs, *reply.logs], hand_back_tokens=True)
        response = _JSONResponse(payload, status_code=status)
        if reply.failure is not None:
            response.error_code = reply.failure.error_code
            if reply.failure.retry_after is not None:
                _retry_after(response, reply.failure.retry_after)
        return response

    async def _accept(
        self, spec: CommandSpec, request: bytes, body: dict[str, Any], logs: list[str], prefer_async: bool
    ) -> Response:
        """Stores the call as a job and answers 202 (spec §4.1); the job runner calls back later."""
        if self.jobs is None:
            message = f"{spec.id} runs asynchronously, and this proxy runs no jobs."
            return _reply(501, error_envelope(501, "AsyncUnavailable", message, logs))
        callback_url = body.get("spiff__callback_url")
        if not isinstance(callback_url, str) or not callback_url.strip():
            message = (
                f"{spec.id} runs asynchronously: its result is PUT to spiff__callback_url, "
                "which the request does not have."
            )
            return _reply(400, error_envelope(400, "CallbackUrlRequired", message, logs))
        problem = self.jobs.callback_problem(callback_url)
        if problem is not None:
            return _reply(400, error_envelope(400, "InvalidCallbackUrl", problem, logs))
        task_id = body.get("spiff__task_id")
        task_id = task_id if isinstance(task_id, str) and task_id else None
        try:
            submitted = await self.jobs.submit(
                NewJob(spec.full_method, spec.id, request, callback_url, task_id, correlation.carrier())
            )
        except JobsBusy as exc:
            logger.warning("%s not accepted: %s", spec.id, exc)
            message = f"{spec.id} could not be accepted: {exc}. Nothing was started; try again later."
            return _retry_after(_reply(503, error_envelope(503, "JobsBusy", message, logs)), exc.retry_after)
        except JobsUnavailable as exc:
            logger.error("%s not accepted: %s", spec.id, exc)
            message = f"{spec.id} could not be accepted: {exc}. Nothing was started; try again later."
            return _reply(503, error_envelope(503, "JobsUnavailable", message, logs))
        if submitted.created:
            logger.info("%s accepted as job %s", spec.id, submitted.job_id)
            logs.append(f"Accepted as job {submitted.job_id}; the result will be PUT to the callback URL.")
        else:
            state = submitted.state.value
            line = f"Task {task_id} already has job {submitted.job_id} ({state}); not starting another."
            logger.info("%s", line)
            logs.append(line)
        command_response = {
            "body": {"job_id": submitted.job_id, "status": submitted.state.value},
            "mimetype": "application/json",
            "http_status": 202,
            "headers": {},
        }
        headers = {"Location": f"{self.path_prefix}/v1/jobs/{submitted.job_id}"}
        if prefer_async:
            headers["Preference-Applied"] = "respond-async"
        return _JSONResponse(_dumps(envelope(command_response, None, logs)), status_code=202, headers=headers)

    async def job(self, request: Request) -> Response:
        """``GET /v1/jobs/{job_id}``: one job's state (never its parameters or result)."""
        jobs = self._jobs_for(request)
        if isinstance(jobs, Response):
            return jobs
        job_id = request.path_params["job_id"]
        try:
            view = await jobs.get(job_id)
        except JobsUnavailable as exc:
            return _reply(503, _plain_error("JobsUnavailable", f"Jobs cannot be read: {exc}."))
        if view is None:
            return _reply(404, _plain_error("JobNotFound", f"There is no job {job_id!r}."))
        return _reply(200, view.to_json())

    async def job_redeliver(self, request: Request) -> Response:
        """``POST /v1/jobs/{job_id}/redeliver``: send a failed job's callback again."""
        jobs = self._jobs_for(request)
        if isinstance(jobs, Response):
            return jobs
        job_id = request.path_params["job_id"]
        try:
            view = await jobs.redeliver(job_id)
        except CannotRedeliver as exc:
            return _reply(409, _plain_error("JobNotRedeliverable", str(exc)))
        except JobsUnavailable as exc:
            return _reply(503, _plain_error("JobsUnavailable", f"The job cannot be delivered again: {exc}."))
        if view is None:
            return _reply(404, _plain_error("JobNotFound", f"There is no job {job_id!r}."))
        return _reply(202, view.to_json())

    async def job_list(self, request: Request) -> Response:
        """``GET /v1/jobs?state=&limit=``: the newest jobs, and the number in each state."""
        jobs = self._jobs_for(request)
        if isinstance(jobs, Response):
            return jobs
        state_text = request.query_params.get("state") or None
        state: JobState | None = None
        if state_text is not None:
            try:
                state = JobState(state_text.lower())
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                return _reply(400, _plain_error("InvalidParameters", f"state must be one of {names}."))
        limit_text = request.query_params.get("limit") or str(_DEFAULT_JOB_LIMIT)
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= _MAX_JOB_LIMIT:
            message = f"limit must be an integer from 1 to {_MAX_JOB_LIMIT}."
            return _reply(400, _plain_error("InvalidParameters", message))
        try:
            views = await jobs.list(state, int(limit_text))
            counts = await jobs.counts()
        except JobsUnavailable as exc:
            return _reply(503, _plain_error("JobsUnavailable", f"Jobs cannot be read: {exc}."))
        return _reply(
            200,
            {"jobs": [v.to_json() for v in views], "counts": {s.value: n for s, n in counts.items()}},
        )


def _plain_error(error_code: str, message: str) -> dict[str, Any]:
    return {"error": {"error_code": error_code, "message": message}}


def _route_template(request: Request) -> str | None:
    return getattr(request.scope.get("route"), "path", None)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    _metrics.request_answered(_route_template(request), request.method, exc.status_code)
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
    payload = {"error": {"error_code": code, "message": f"{request.method} {request.url.path}: {exc.detail}"}}
    return _JSONResponse(json.dumps(payload).encode(), status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    _metrics.request_answered(_route_template(request), request.method, 500)
    payload = error_envelope(500, "Internal", "The proxy failed unexpectedly; its log has the details.")
    return _reply(500, payload)


def _with_jobs(
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None,
    jobs: JobBackend,
    endpoints: ProxyEndpoints,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def with_jobs(app: Starlette) -> AsyncIterator[None]:
        async with lifespan(app) if lifespan is not None else nullcontext():
            # The catalogue as the lifespan left it (upstreams discovered), kept current after.
            await jobs.start(endpoints.catalogue, endpoints.invoker)
            try:
                yield
            finally:
                await jobs.close()

    return with_jobs


def create_app(
    catalogue: Catalogue,
    invoker: Invoker,
    *,
    api_key: str | None = None,
    command_timeout: float = 40.0,
    max_body_bytes: int = 32 * 1024 * 1024,
    path_prefix: str = "",
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    jobs: JobBackend | None = None,
    upstreams: Callable[[], list[dict[str, Any]]] | None = None,
    readiness: Callable[[], list[str]] | None = None,
    access_log: AccessLog | None = None,
    metrics: bool = True,
    admission: Admission | None = None,
    auth_flow: AuthFlow | None = None,
) -> Starlette:
    """The REST shim: ``/v1/commands``, ``/v1/auths`` (and the browser flow ``/v1/auth/...``),
    ``/v1/do/{connector}/{command}``,
    ``/v1/jobs``, ``/openapi.json``, liveness and readiness.

    Args:
        catalogue: the commands, built from descriptors.
        invoker: how commands run (in-process, over a channel, or both).
        api_key: when set, required in ``Spiff-Connector-Proxy-Api-Key`` except on liveness
            and readiness.
        command_timeout: the deadline of each command, below spiff-arena's 45 s.
        max_body_bytes: larger ``/v1/do`` bodies get 413.
        path_prefix: serve everything under this prefix (e.g. ``/standard``).
        lifespan: what runs around the app's life (start servers, open channels).
        jobs: where asynchronous calls go (long-running commands, ``Prefer: respond-async``,
            ``proxy__async``); started after ``lifespan`` has entered and closed before it exits.
            Without one, such calls answer 501 ``AsyncUnavailable``.
        upstreams: what ``GET /v1/upstreams`` shows (the gRPC servers fronted); ``[]`` without.
        readiness: why this process should get no traffic now (e.g. draining), asked by
            ``GET /readiness`` with the job backend's own check; ready when both say nothing.
        access_log: told of every ``/v1/do`` answer (one access line each); None for none.
        admission: the process's limits on calls in flight and bytes of bodies held; a
            ``/v1/do`` beyond them is answered 503 ``ProxyBusy`` with ``Retry-After``.
        metrics: count requests for ``GET /metrics``; False serves no ``/metrics`` and counts
            nothing.
        auth_flow: the browser OAuth flow's settings (``GET /v1/auth/...``, no API key: a browser
            navigation); by default one that allows no redirect, so every flow is refused.

    Every ``/v1/do`` answer carries ``X-Request-Id``: the caller's when acceptable, else a new
    one; it is the current request id (:mod:`server.correlation`) while the command runs.

    The catalogue can be replaced while the app runs: :func:`replace_catalogue`.
    """
    if api_key is not None and not api_key:
        msg = "an empty API key would leave the proxy open; pass None to run without one"
        raise ValueError(msg)
    endpoints = ProxyEndpoints(
        catalogue,
        invoker,
        api_key=api_key,
        command_timeout=command_timeout,
        max_body_bytes=max_body_bytes,
        jobs=jobs,
        path_prefix=path_prefix,
        upstreams=upstreams,
        readiness=readiness,
        access_log=access_log,
        metrics=metrics,
        admission=admission,
        auth_flow=auth_flow,
    )
    if jobs is not None:
        lifespan = _with_jobs(lifespan, jobs, endpoints)

    def route(
        path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str] | None = None
    ) -> Route:
        return Route(path, _metrics.counting(path, endpoint) if metrics else endpoint, methods=methods)

    routes: list[BaseRoute] = [
        # The hot route first: Starlette tries routes in order.
        # Counted by its endpoint, with the command.
        Route(_metrics.DO_ROUTE, endpoints.do, methods=["POST"]),
        route("/v1/commands", endpoints.commands),
        route("/v1/auths", endpoints.auths),
        route("/v1/auth/{connector}/{auth}", endpoints.auth_start),
        route("/v1/auth/{connector}/{auth}/callback", endpoints.auth_callback),
        route("/v1/upstreams", endpoints.upstreams),
        route("/v1/jobs", endpoints.job_list),
        route("/v1/jobs/{job_id}", endpoints.job),
        route("/v1/jobs/{job_id}/redeliver", endpoints.job_redeliver, methods=["POST"]),
        route("/openapi.json", endpoints.openapi),
        route("/v1/typeahead/{category}", endpoints.typeahead),
        route("/liveness", endpoints.liveness),
        route("/v1/liveness", endpoints.liveness),
        route("/readiness", endpoints.readiness),
    ]
    if metrics:
        routes.append(route("/metrics", endpoints.metrics))
    if path_prefix:
        routes = [Mount(path_prefix, routes=list(routes))]
    app = Starlette(
        routes=list(routes),
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.endpoints = endpoints
    return app


async def metrics_exposition(app: Starlette, accept: str | None = None) -> tuple[bytes, str]:
    """What ``GET /metrics`` of an app made by :func:`create_app` answers, without its API key:
    for a metrics port of its own (``CONNECTOR_PROXY_METRICS_PORT``). Returns the body and its
    content type."""
    endpoints: ProxyEndpoints = app.state.endpoints
    return await endpoints.metrics_exposition(accept)


def replace_catalogue(app: Starlette, catalogue: Catalogue) -> None:
    """Makes an app made by :func:`create_app` serve ``catalogue`` (``/v1/commands``,
    ``/openapi.json``, ``/v1/do`` and its jobs) from the next request on."""
    endpoints: ProxyEndpoints = app.state.endpoints
    endpoints.replace_catalogue(catalogue)
