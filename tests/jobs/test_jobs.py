"""Long-running commands through the REST shim, on both paths, against a fake spiff-arena backend:
the 202 answer, the callback (body, headers, URL), its delivery rules, idempotency, and asking
for asynchronous execution of any command."""

from __future__ import annotations

import logging
import time
import uuid

import anyio
import jsonschema
import pytest

from jobs import EmbeddedJobs
from tests.conftest import client_for
from tests.jobs.conftest import (
    CALLBACK_KEY,
    TASK_ID,
    callback_url,
    callbacks,
    job_in,
    running,
    spiff_body,
)
from tests.ports import free_port

pytestmark = pytest.mark.anyio

DELAY = "/v1/do/example/Delay"
EXAMPLE = "/v1/do/example/Example"
CALLBACK_PATH = f"/v1.0/tasks/42/{TASK_ID}/callback"


def accepted_job(response) -> str:
    """Checks the 202 envelope (behaviour 36) and returns the job id."""
    assert response.status_code == 202, response.text
    payload = response.json()
    body = payload["command_response"]["body"]
    assert payload == {
        "command_response": {
            "body": {"job_id": body["job_id"], "status": body["status"]},
            "mimetype": "application/json",
            "http_status": 202,
            "headers": {},
        },
        "command_response_version": 2,
        "error": None,
        "spiff__logs": payload["spiff__logs"],
    }
    assert all(isinstance(line, str) for line in payload["spiff__logs"])
    uuid.UUID(body["job_id"])
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
    return str(body["job_id"])


async def test_long_running_command_answers_202_then_puts_its_result(jobs_proxy, spiff, backend):
    response = await jobs_proxy.post(DELAY, json=spiff_body(seconds=0, message="done"))
    job_id = accepted_job(response)
    assert response.json()["command_response"]["body"]["status"] == "queued"
    assert response.json()["spiff__logs"] == [
        f"Accepted as job {job_id}; the result will be PUT to the callback URL."
    ]
    document = (await jobs_proxy.get("/openapi.json")).json()
    assert "202" in document["paths"][DELAY]["post"]["responses"]
    jsonschema.validate(response.json(), document["components"]["schemas"]["Envelope"])

    (call,) = await callbacks(spiff, 1)
    assert call.method == "PUT"
    assert call.path == CALLBACK_PATH  # localhost:7000 rewritten to the configured base URL
    assert call.headers["content-type"] == "application/json"
    assert call.headers["spiffworkflow-api-key"] == CALLBACK_KEY
    assert "authorization" not in call.headers
    assert call.json() == {
        "command_response": {
            "body": {"message": "done", "waited_seconds": 0},
            "mimetype": "application/json",
            "http_status": 200,
            "headers": {},
        },
        "command_response_version": 2,
        "error": None,
        "spiff__logs": [f"Ran as job {job_id}."],
    }

    job = await job_in(jobs_proxy, job_id, "delivered")
    assert job == {
        "id": job_id,
        "command": "example/Delay",
        "task_id": TASK_ID,
        "state": "delivered",
        "attempts": 1,
        "delivery_attempts": 1,
        "last_error": None,
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
        "worker": job["worker"],
    }
    assert job["worker"] == (None if backend == "embedded" else "in-process")
    assert job["created_at"].endswith("Z")
    assert job["created_at"] <= job["updated_at"]


async def test_the_command_really_runs_in_the_background(jobs_proxy, spiff):
    started = anyio.current_time()
    response = await jobs_proxy.post(DELAY, json=spiff_body(seconds=1, message="later"))
    job_id = accepted_job(response)
    assert anyio.current_time() - started < 0.5
    assert (await job_in(jobs_proxy, job_id, "running"))["attempts"] == 1
    (call,) = await callbacks(spiff, 1)
    assert anyio.current_time() - started >= 1
    assert call.json()["command_response"]["body"] == {"message": "later", "waited_seconds": 1}


async def test_bearer_token_and_identity_provider_headers(make_app, make_jobs, spiff):
    jobs = make_jobs(delivery={"api_key": None, "bearer_token": "tok-123", "auth_identifier": "keycloak"})
    async with running(make_app(jobs=jobs)) as client:
        accepted_job(await client.post(DELAY, json=spiff_body(seconds=0)))
        (call,) = await callbacks(spiff, 1)
    assert call.headers["authorization"] == "Bearer tok-123"
    assert call.headers["spiffworkflow-authentication-identifier"] == "keycloak"
    assert "spiffworkflow-api-key" not in call.headers


async def test_a_failing_command_sends_an_error_callback_with_a_body(jobs_proxy, spiff):
    # Valid parameters (a Delay out of range is refused at once, before any job), and a command
    # that fails while it runs: nothing listens on the port (behaviour 40).
    port = free_port()
    body = spiff_body(url=f"http://127.0.0.1:{port}/", attempts=1, proxy__async=True)
    response = await jobs_proxy.post("/v1/do/http/GetRequestV2", json=body)
    job_id = accepted_job(response)
    (call,) = await callbacks(spiff, 1)
    payload = call.json()
    assert payload["error"]["error_code"] == "ConnectionError"
    assert f"cannot connect to 127.0.0.1:{port}" in payload["error"]["message"]
    assert payload["command_response"] == {
        "body": None,
        "mimetype": "application/json",
        "http_status": 503,
        "headers": {},
    }
    assert payload["command_response_version"] == 2
    assert (await job_in(jobs_proxy, job_id, "delivered"))["last_error"] is None


async def test_a_command_over_the_job_timeout_calls_back_deadline_exceeded(make_app, make_jobs, spiff):
    async with running(make_app(jobs=make_jobs(job_timeout=0.2))) as client:
        accepted_job(await client.post(DELAY, json=spiff_body(seconds=5)))
        (call,) = await callbacks(spiff, 1)
    payload = call.json()
    assert payload["error"]["error_code"] == "DeadlineExceeded"
    assert payload["command_response"]["http_status"] == 504
    assert "body" in payload["command_response"]


async def test_callback_base_url_with_a_path_prefix(make_app, make_jobs, spiff):
    jobs = make_jobs(delivery={"base_url": f"{spiff.url}/backend/"})
    async with running(make_app(jobs=jobs)) as client:
        body = spiff_body(seconds=0)
        # spiff-arena mounted under /api on localhost: everything before /v1.0/ is replaced.
        body["spiff__callback_url"] = callback_url(base="http://localhost:7000/api") + "?x=1"
        accepted_job(await client.post(DELAY, json=body))
        (call,) = await callbacks(spiff, 1)
    assert call.path == f"/backend{CALLBACK_PATH}?x=1"


async def test_without_a_base_url_the_callback_goes_where_spiff_said(make_app, make_jobs, spiff):
    jobs = make_jobs(delivery={"base_url": "", "api_key": None})
    async with running(make_app(jobs=jobs)) as client:
        body = spiff_body(seconds=0)
        body["spiff__callback_url"] = callback_url(base=spiff.url)
        accepted_job(await client.post(DELAY, json=body))
        (call,) = await callbacks(spiff, 1)
    assert call.path == CALLBACK_PATH
    assert "spiffworkflow-api-key" not in call.headers


async def test_retries_500_and_a_dropped_connection_then_delivers(jobs_proxy, spiff):
    spiff.script("500", "drop", "200")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0, message="m")))
    calls = await callbacks(spiff, 3)
    assert {call.body for call in calls} == {calls[0].body}  # the same envelope each time
    job = await job_in(jobs_proxy, job_id, "delivered")
    # aiohttp re-sends an idempotent request once, at once, when the connection is dropped
    # (RFC 9112 §9.3.1): the drop and the 200 are one attempt.
    assert job["delivery_attempts"] == 2
    assert job["last_error"] is None
    await anyio.sleep(0.2)
    assert len(spiff.calls) == 3


async def test_retries_connection_drops_with_backoff(jobs_proxy, spiff):
    spiff.script("drop", "drop", "drop", "drop", "200")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    await callbacks(spiff, 5)
    job = await job_in(jobs_proxy, job_id, "delivered")
    assert job["delivery_attempts"] == 3


async def test_a_retry_scheduled_answer_is_delivered(jobs_proxy, spiff):
    spiff.script("200:retry")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    assert (await job_in(jobs_proxy, job_id, "delivered"))["delivery_attempts"] == 1


async def test_stops_on_400_and_records_the_answer(jobs_proxy, spiff):
    spiff.script("400")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    job = await job_in(jobs_proxy, job_id, "delivered")
    assert job["delivery_attempts"] == 1
    assert "400 not_waiting_for_callback" in job["last_error"]
    await anyio.sleep(0.2)
    assert len(spiff.calls) == 1


async def test_invalid_callback_body_answer_is_a_failure(jobs_proxy, spiff):
    spiff.script("400:invalid_callback_body")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    job = await job_in(jobs_proxy, job_id, "failed")
    assert "invalid_callback_body" in job["last_error"]
    assert len(spiff.calls) == 1


async def test_403_fails_at_once_and_says_why(jobs_proxy, spiff, caplog):
    caplog.set_level(logging.DEBUG)
    spiff.script("403")
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    job = await job_in(jobs_proxy, job_id, "failed")
    assert job["delivery_attempts"] == 1
    assert "403 not_authorized" in job["last_error"]
    assert "CONNECTOR_PROXY_CALLBACK_API_KEY" in job["last_error"]
    await anyio.sleep(0.2)
    assert len(spiff.calls) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and job_id in r.getMessage()]
    assert errors
    assert CALLBACK_KEY not in caplog.text


async def test_a_failed_job_is_delivered_again_on_request(jobs_proxy, spiff):
    spiff.script("403")  # say the credential was wrong, then fixed
    job_id = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0, message="again")))
    await job_in(jobs_proxy, job_id, "failed")

    response = await jobs_proxy.post(f"/v1/jobs/{job_id}/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["state"] in ("delivering", "delivered")
    first, second = await callbacks(spiff, 2)
    assert second.body == first.body  # the same envelope; the command did not run again
    assert second.json()["command_response"]["body"] == {"message": "again", "waited_seconds": 0}
    job = await job_in(jobs_proxy, job_id, "delivered")
    assert (job["attempts"], job["delivery_attempts"], job["last_error"]) == (1, 1, None)

    refused = await jobs_proxy.post(f"/v1/jobs/{job_id}/redeliver")
    assert refused.status_code == 409
    assert refused.json() == {
        "error": {
            "error_code": "JobNotRedeliverable",
            "message": "The job is delivered: only failed jobs are delivered again.",
        }
    }
    missing = await jobs_proxy.post("/v1/jobs/no-such-job/redeliver")
    assert (missing.status_code, missing.json()["error"]["error_code"]) == (404, "JobNotFound")
    assert (await jobs_proxy.get(f"/v1/jobs/{job_id}/redeliver")).status_code == 405


async def test_a_failed_job_is_not_delivered_again_while_its_task_has_another(jobs_proxy, spiff):
    spiff.script("403")
    failed = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0)))
    await job_in(jobs_proxy, failed, "failed")
    pending = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=2)))  # spiff's retry
    response = await jobs_proxy.post(f"/v1/jobs/{failed}/redeliver")
    assert response.status_code == 409
    assert response.json()["error"]["message"] == f"Task {TASK_ID} has another pending job, {pending}."
    await job_in(jobs_proxy, pending, "delivered")
    assert (await job_in(jobs_proxy, failed, "failed"))["delivery_attempts"] == 1


async def test_gives_up_after_the_configured_attempts(make_app, make_jobs, spiff, caplog):
    caplog.set_level(logging.DEBUG)
    spiff.default = "500"
    async with running(make_app(jobs=make_jobs(delivery={"attempts": 3}))) as client:
        job_id = accepted_job(await client.post(DELAY, json=spiff_body(seconds=0)))
        job = await job_in(client, job_id, "failed")
        assert job["delivery_attempts"] == 3
        assert job["last_error"].startswith("gave up after 3 attempts")
        assert "500 internal_server_error" in job["last_error"]
        listed = (await client.get("/v1/jobs", params={"state": "failed"})).json()
        assert [j["id"] for j in listed["jobs"]] == [job_id]
        assert listed["counts"]["failed"] == 1
    assert len(spiff.calls) == 3
    assert any(r.levelno == logging.ERROR and job_id in r.getMessage() for r in caplog.records)
    assert CALLBACK_KEY not in caplog.text


async def test_a_second_post_for_a_pending_task_joins_its_job(jobs_proxy, spiff, caplog):
    caplog.set_level(logging.INFO)
    first = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=1, message="once")))
    again = await jobs_proxy.post(DELAY, json=spiff_body(seconds=1, message="once"))
    assert accepted_job(again) == first
    assert again.json()["command_response"]["body"]["status"] in ("queued", "running")
    assert "not starting another" in again.json()["spiff__logs"][0]
    assert "not starting another" in caplog.text
    await callbacks(spiff, 1)
    await job_in(jobs_proxy, first, "delivered")
    await anyio.sleep(0.2)
    assert len(spiff.calls) == 1
    listed = (await jobs_proxy.get("/v1/jobs")).json()
    assert len(listed["jobs"]) == 1

    # spiff-arena scheduled a retry (behaviour 42): the same task again is a fresh job.
    retry = accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0, message="twice")))
    assert retry != first
    calls = await callbacks(spiff, 2)
    assert calls[1].json()["command_response"]["body"]["message"] == "twice"


async def test_pending_jobs_are_bounded_and_a_task_may_still_join_its_job(make_app, make_jobs, spiff, caplog):
    async with running(make_app(jobs=make_jobs(max_pending=2, workers=1))) as client:
        first = accepted_job(await client.post(DELAY, json=spiff_body("task-1", seconds=1, message="one")))
        accepted_job(await client.post(DELAY, json=spiff_body("task-2", seconds=1, message="two")))
        refused = await client.post(DELAY, json=spiff_body("task-3", seconds=0, message="three"))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["error_code"] == "JobsBusy"
        assert "2 jobs are still pending" in refused.json()["error"]["message"]
        assert "not accepted" in caplog.text
        # A second POST for a pending task joins its job even at the limit: nothing new is held.
        assert (
            accepted_job(await client.post(DELAY, json=spiff_body("task-1", seconds=1, message="one")))
            == first
        )
        await callbacks(spiff, 2)
        listed = (await client.get("/v1/jobs")).json()["jobs"]
        assert sorted(job["task_id"] for job in listed) == ["task-1", "task-2"]
        # Delivered jobs no longer count: the refused task is accepted when it is retried.
        for job in listed:
            await job_in(client, job["id"], "delivered")
        accepted_job(await client.post(DELAY, json=spiff_body("task-3", seconds=0, message="three")))
        await callbacks(spiff, 3)


async def test_prefer_respond_async_on_a_normal_command(jobs_proxy, spiff):
    response = await jobs_proxy.post(
        EXAMPLE,
        json=spiff_body(message="hi"),
        headers={"Prefer": 'return=minimal; x="a,b", RESPOND-ASYNC; wait=10'},
    )
    job_id = accepted_job(response)
    assert response.headers["preference-applied"] == "respond-async"
    (call,) = await callbacks(spiff, 1)
    assert call.json()["command_response"]["body"]["message"] == "hi"
    assert call.json()["spiff__logs"] == [f"Ran as job {job_id}."]

    # The same command without the preference answers at once, as always.
    sync = await jobs_proxy.post(EXAMPLE, json=spiff_body(message="now"), headers={"Prefer": "wait=5"})
    assert sync.status_code == 200
    assert sync.json()["command_response"]["body"]["message"] == "now"


@pytest.mark.parametrize("flag", [True, "true", " TRUE "])
async def test_proxy_async_on_a_normal_command(jobs_proxy, spiff, flag):
    response = await jobs_proxy.post(EXAMPLE, json=spiff_body(message="p", proxy__async=flag))
    accepted_job(response)
    assert "preference-applied" not in response.headers
    (call,) = await callbacks(spiff, 1)
    assert call.json()["command_response"]["body"]["message"] == "p"


async def test_proxy_keys_never_reach_a_command(jobs_proxy, spiff):
    response = await jobs_proxy.post(
        EXAMPLE, json=spiff_body(message="s", proxy__async=False, proxy__colour="red")
    )
    assert response.status_code == 200
    # Unknown proxy__ keys are reported once, as reserved; proxy__async is not reported at all.
    assert response.json()["spiff__logs"] == [
        "Ignored reserved parameter 'proxy__colour': this proxy does not know it."
    ]
    # proxy__async: false does not make a long-running command synchronous.
    accepted_job(await jobs_proxy.post(DELAY, json=spiff_body(seconds=0, proxy__async="false")))
    await callbacks(spiff, 1)


async def test_a_bad_proxy_async_value_is_refused(jobs_proxy):
    response = await jobs_proxy.post(EXAMPLE, json=spiff_body(message="x", proxy__async="maybe"))
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidParameters"
    assert "proxy__async" in response.json()["error"]["message"]


async def test_bad_parameters_are_refused_synchronously(jobs_proxy, spiff):
    response = await jobs_proxy.post(DELAY, json=spiff_body(seconds="soon"))
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidParameters"
    assert "seconds" in response.json()["error"]["message"]
    missing = await jobs_proxy.post(EXAMPLE, json=spiff_body(proxy__async=True))
    assert missing.status_code == 400
    assert (await jobs_proxy.get("/v1/jobs")).json()["jobs"] == []
    await anyio.sleep(0.1)
    assert spiff.calls == []


async def test_an_async_call_needs_a_callback_url(jobs_proxy):
    body = spiff_body(seconds=0)
    del body["spiff__callback_url"]
    response = await jobs_proxy.post(DELAY, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "CallbackUrlRequired"
    assert response.json()["command_response"]["body"] is None
    response = await jobs_proxy.post(EXAMPLE, json={"message": "m"}, headers={"Prefer": "respond-async"})
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "CallbackUrlRequired"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://localhost/v1.0/tasks/42/t/callback",
        "/v1.0/tasks/42/t/callback",
        # With a credential configured, only spiff-arena's callback route is accepted: the
        # credential must not complete a user task (PUT /v1.0/tasks/<pi>/<task>).
        "http://localhost:7000/v1.0/tasks/42/t",
    ],
)
async def test_an_unusable_callback_url_is_refused(jobs_proxy, url):
    body = spiff_body(seconds=0)
    body["spiff__callback_url"] = url
    response = await jobs_proxy.post(DELAY, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidCallbackUrl"
    assert (await jobs_proxy.get("/v1/jobs")).json()["jobs"] == []


async def test_without_a_task_id_every_call_is_a_job(jobs_proxy, spiff):
    body = {"seconds": 0, "spiff__callback_url": callback_url()}
    first = accepted_job(await jobs_proxy.post(DELAY, json=body))
    second = accepted_job(await jobs_proxy.post(DELAY, json=body))
    assert first != second
    await callbacks(spiff, 2)


async def test_job_endpoints(make_app, make_jobs, spiff):
    headers = {"Spiff-Connector-Proxy-Api-Key": "proxy-key"}
    async with running(make_app(jobs=make_jobs(), api_key="proxy-key")) as client:
        for path in ("/v1/jobs", "/v1/jobs/whatever"):
            refused = await client.get(path)
            assert refused.status_code == 401
            assert refused.json() == {"error": "Unauthorized"}
        spiff.script("403")
        failed = accepted_job(await client.post(DELAY, json=spiff_body(seconds=0), headers=headers))
        await callbacks(spiff, 1)
        delivered = accepted_job(
            await client.post(DELAY, json=spiff_body(str(uuid.uuid4()), seconds=0), headers=headers)
        )
        await callbacks(spiff, 2)
        for _ in range(100):
            listed = (await client.get("/v1/jobs", headers=headers)).json()
            if listed["counts"]["delivered"] == 1 and listed["counts"]["failed"] == 1:
                break
            await anyio.sleep(0.02)
        assert listed["counts"] == {"queued": 0, "running": 0, "delivering": 0, "delivered": 1, "failed": 1}
        assert [j["id"] for j in listed["jobs"]] == [delivered, failed]  # newest first
        only = await client.get("/v1/jobs", params={"state": "FAILED", "limit": "1"}, headers=headers)
        assert [j["id"] for j in only.json()["jobs"]] == [failed]
        one = await client.get("/v1/jobs", params={"limit": 1}, headers=headers)
        assert [j["id"] for j in one.json()["jobs"]] == [delivered]
        for params in ({"state": "lost"}, {"limit": "0"}, {"limit": "x"}, {"limit": "1001"}):
            bad = await client.get("/v1/jobs", params=params, headers=headers)
            assert bad.status_code == 400, params
            assert bad.json()["error"]["error_code"] == "InvalidParameters"
        missing = await client.get("/v1/jobs/nope", headers=headers)
        assert missing.status_code == 404
        assert missing.json()["error"]["error_code"] == "JobNotFound"
        # A job's view never shows its parameters, result or the callback URL.
        view = (await client.get(f"/v1/jobs/{delivered}", headers=headers)).text
        assert "callback" not in view
        assert "waited_seconds" not in view


async def test_without_a_job_backend_async_calls_are_refused(make_app):
    async with client_for(make_app()) as client:
        response = await client.post(DELAY, json=spiff_body(seconds=0))
        assert response.status_code == 501
        assert response.json()["error"]["error_code"] == "AsyncUnavailable"
        assert (await client.get("/v1/jobs")).status_code == 404


async def test_commands_mark_long_running_ones(jobs_proxy):
    commands = {c["id"]: c for c in (await jobs_proxy.get("/v1/commands")).json()}
    assert commands["example/Delay"]["long_running"] is True
    assert "long_running" not in commands["example/Example"]
    assert [p["id"] for p in commands["example/Delay"]["parameters"]] == ["seconds", "message"]
    assert not any(c.startswith(("jobs/", "proxy/")) for c in commands)


async def test_readiness_asks_the_job_backend(jobs_proxy):
    response = await jobs_proxy.get("/readiness")
    assert response.status_code == 200, response.text
    assert response.json() == {"ready": True}


@pytest.mark.parametrize("backend", ["embedded"])  # its store's thread; Redis: test_broker_outages
async def test_a_job_store_that_does_not_answer_makes_the_proxy_unready(make_app, make_jobs, backend):
    jobs = make_jobs()
    assert isinstance(jobs, EmbeddedJobs)
    async with running(make_app(jobs=jobs)) as client:
        # The store's one thread is held (as by a stuck disk): readiness answers in its 2 s.
        held = anyio.Event()

        async def hold() -> None:
            await jobs.store.call(time.sleep, 3)
            held.set()

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await anyio.sleep(0.05)
            started = time.monotonic()
            response = await client.get("/readiness")
            assert time.monotonic() - started < 2.5
            assert response.status_code == 503
            body = response.json()
            assert body["ready"] is False
            assert body["error"]["error_code"] == "NotReady"
            assert body["problems"] == ["the job store did not answer within 2 s"]
            await held.wait()
        assert (await client.get("/readiness")).status_code == 200
    assert await jobs.readiness_problem() == "the job runner is not running"
