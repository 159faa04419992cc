"""End to end: BPMN diagrams with spiff service tasks, run by SpiffWorkflow against the real proxy.

The proxy runs as its own process (``python -m connector_proxy``); the engine calls it through
``backend_rules``, which applies spiff-arena's request building and response rules exactly
(spec §2, §3.2-3.4). So each test shows what an Arena process instance would end up with.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pypdf
import pytest
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.util.task import TaskState

from tests.connectors.openai_fake import KEY, FakeOpenAI
from tests.connectors.smtp_target import SmtpTarget

from .backend_rules import (
    BackendScriptEngine,
    BackendServiceDelegate,
    Exchange,
    UncaughtServiceTaskError,
    load_workflow,
)

DIAGRAMS = Path(__file__).parent / "diagrams"


@pytest.fixture
def delegate(proxy_process) -> Iterator[BackendServiceDelegate]:
    with httpx.Client(trust_env=False, follow_redirects=True) as client:  # requests follows redirects
        yield BackendServiceDelegate(proxy_process.url, client)


def run(name: str, delegate: BackendServiceDelegate, **start_data: Any) -> Any:
    """Parses ``diagrams/<name>.bpmn`` (process id ``name``), seeds its data and runs the engine."""
    workflow = load_workflow(DIAGRAMS / f"{name}.bpmn", name, BackendScriptEngine(delegate))
    workflow.get_next_task(spec_name="Start").data.update(start_data)
    workflow.do_engine_steps()
    return workflow


def state_of(workflow: Any, spec_name: str) -> str:
    (task,) = workflow.get_tasks(spec_name=spec_name)
    return str(TaskState.get_name(task.state))


def assert_v2_envelope(exchange: Exchange) -> dict[str, Any]:
    """The stricter shape rules of spec §3.1 / §8 items 25-28, 35 that the backend relies on."""
    envelope = json.loads(exchange["text"])
    assert type(envelope.get("command_response_version")) is int, envelope
    assert envelope["command_response_version"] == 2
    response = envelope["command_response"]
    assert isinstance(response, dict)
    assert {"body", "mimetype"} <= response.keys()
    if "http_status" in response:
        assert type(response["http_status"]) is int, response
    logs = envelope.get("spiff__logs", [])
    assert isinstance(logs, list)
    assert all(isinstance(line, str) for line in logs)
    error = envelope.get("error")
    assert error is None or (
        isinstance(error.get("error_code"), str) and isinstance(error.get("message"), str)
    )
    if exchange["status_code"] >= 300:
        assert error is not None, "outer non-2xx without error → ServiceTaskOperatorReturnedBadStatusError"
    return dict(envelope)


def test_example_result_lands_in_result_variable(delegate):
    """(c) ``example/Example``: the v2 result plus operator_identifier is the task's ``response``."""
    workflow = run("example_echo", delegate)

    assert workflow.completed
    assert workflow.data["response"] == {
        "body": {
            "connector_response": "You passed the example connector: 'hello'. Have a good day!",
            "message": "hello",
        },
        "mimetype": "application/json",
        "http_status": 200,
        "headers": {},
        "operator_identifier": "example/Example",
    }
    (exchange,) = delegate.exchanges
    assert exchange["status_code"] == 200
    assert_v2_envelope(exchange)
    # The request carried every reserved key (§2.3) and the proxy did not choke on them (§8.17).
    (task,) = workflow.get_tasks(spec_name="call_example")
    assert exchange["request"] == {
        "message": "hello",
        "spiff__process_instance_id": 42,
        "spiff__process_model_identifier": "e2e/service_task",
        "spiff__task_id": str(task.id),
        "spiff__task_data": {},
        "spiff__callback_url": f"http://localhost:7000/v1.0/tasks/42/{task.id}/callback",
    }


def test_rand_number_from_task_data_lands_in_the_result_variable(delegate):
    """``rand/Number`` with ``max`` from task data (an int expression): a die roll in range."""
    rolls = set()
    for _ in range(30):
        delegate.exchanges.clear()
        workflow = run("rand_number", delegate, sides=6)
        assert workflow.completed
        roll = workflow.data["roll"]
        assert set(roll) == {"body", "mimetype", "http_status", "headers", "operator_identifier"}
        assert (roll["http_status"], roll["operator_identifier"]) == (200, "rand/Number")
        assert 1 <= roll["body"]["number"] <= 6
        rolls.add(roll["body"]["number"])
        (exchange,) = delegate.exchanges
        assert exchange["request"]["max"] == 6
        assert exchange["request"]["min"] == 1
        assert_v2_envelope(exchange)
    assert len(rolls) > 1  # 30 rolls of one face: odds about 1 in 10^22


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server (``tests/connectors/openai_fake.py``) for ``ai/LlmRequest``."""
    with FakeOpenAI() as server:
        yield server


def test_ai_structured_output_lands_in_task_data(delegate, openai_server):
    """``ai/LlmRequest`` with messages and a JSON Schema written by a script task: the parsed answer
    is in the result variable, and the next script task reads a field of it."""
    ticket = "I was charged twice for invoice 4711."
    workflow = run("ai_ticket_triage", delegate, ticket=ticket, api_base=openai_server.base_url, api_key=KEY)

    assert workflow.completed
    triage = workflow.data["triage"]
    assert (triage["http_status"], triage["operator_identifier"]) == (200, "ai/LlmRequest")
    assert triage["body"]["parsed"] == {"category": "billing", "summary": ticket}
    assert triage["body"]["finish_reason"] == "stop"
    assert workflow.data["category"] == "billing"
    (exchange,) = delegate.exchanges
    assert_v2_envelope(exchange)
    assert "tools" not in exchange["request"]  # a parameter without value is absent
    (request,) = openai_server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.payload["messages"][1] == {"role": "user", "content": ticket}
    assert request.payload["temperature"] == 0
    assert request.payload["response_format"]["json_schema"]["schema"]["required"] == ["category", "summary"]


INVOICE_TEMPLATE = """<style>@page { size: A5; margin: 12mm }</style>
<h1>Invoice {{ number }}</h1>
<ul>{% for line in lines %}<li>{{ line.text }}: {{ line.amount }}</li>{% endfor %}</ul>
<p>Total due: {{ lines | sum(attribute="amount") }}</p>"""


def test_artifacts_pdf_from_a_template_is_emailed_as_an_attachment(delegate):
    """``artifacts/GenerateArtifact`` makes an invoice PDF from task data; its data URL result goes
    as it is into ``smtp/SendEmail``'s attachments, and the mail carries the same PDF."""
    invoice = {
        "number": "INV-7",
        "email": "ann@example.com",
        "lines": [{"text": "Consulting <2 days>", "amount": 200}, {"text": "Travel", "amount": 40}],
    }
    with SmtpTarget() as smtp:
        workflow = run(
            "artifacts_invoice_email",
            delegate,
            invoice=invoice,
            invoice_template=INVOICE_TEMPLATE,
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
        )
        (delivery,) = smtp.find("Invoice INV-7")

    assert workflow.completed
    artifact = workflow.data["artifact"]
    assert (artifact["http_status"], artifact["operator_identifier"]) == (200, "artifacts/GenerateArtifact")
    body = artifact["body"]
    assert (body["file_name"], body["pages"], body["private_link"]) == ("INV-7.pdf", 1, None)
    pdf = base64.b64decode(body["file_data"].partition(",")[2])
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Invoice INV-7" in text
    assert "Consulting <2 days>: 200" in text
    assert "Total due: 240" in text
    (part,) = list(delivery.message.iter_attachments())
    assert (part.get_filename(), part.get_content()) == ("INV-7.pdf", pdf)
    assert workflow.data["sent"]["body"]["accepted"] == ["ann@example.com"]
    for exchange in delegate.exchanges:
        assert_v2_envelope(exchange)


def test_task_data_variables_tagged_values_and_stale_params(delegate):
    """Task data as the backend ships it: evaluated variables, tagged non-JSON types, stale params.

    ``message`` is the expression ``greeting``; a stale parameter is sent anyway (§2.1 rule 5); a
    parameter without value is absent; ``spiff__task_data`` holds datetime/UUID/timedelta as tagged
    dicts (§2.4, §8.22), unicode, a big int and 2 MB of text. With no ``resultVariable`` the result goes to
    ``spiff__<task id>_result`` (§3.3).
    """
    start_data = {
        "greeting": "grüß dich ✓",
        "when": datetime(2026, 1, 2, 3, 4, 5),
        "ref": UUID("88f9b549-5a29-483c-9f1e-10b7f534a258"),
        "wait": timedelta(days=1, seconds=30),
        "nested": {"big": 2**70, "items": [1, 2.5, None, True]},
        "blob": "x" * 2_000_000,  # whole task data travels; no small body limit (§2.4)
    }
    workflow = run("example_task_data", delegate, **start_data)

    assert workflow.completed
    assert workflow.data["spiff__call_example_result"] == {
        "body": {
            "connector_response": "You passed the example connector: 'grüß dich ✓'. Have a good day!",
            "message": "grüß dich ✓",
        },
        "mimetype": "application/json",
        "http_status": 200,
        "headers": {},
        "operator_identifier": "example/Example",
    }
    (exchange,) = delegate.exchanges
    assert exchange["status_code"] == 200
    assert_v2_envelope(exchange)
    request = exchange["request"]
    assert request["retired_param"] == 7
    assert "no_value" not in request
    assert request["spiff__task_data"]["when"] == {"value": "2026-01-02T03:04:05", "typename": "datetime"}
    assert request["spiff__task_data"]["ref"] == {
        "value": "88f9b549-5a29-483c-9f1e-10b7f534a258",
        "typename": "UUID",
    }
    assert request["spiff__task_data"]["wait"] == {"days": 1, "seconds": 30, "typename": "timedelta"}


def test_uncaught_invalid_parameters_fails_the_task(delegate):
    """(d) A dropped required param (§2.1 rule 1) → 400 ``InvalidParameters``; nothing catches it."""
    with pytest.raises(WorkflowTaskException) as raised:
        run("example_missing_param", delegate)

    cause = raised.value.__cause__
    assert isinstance(cause, UncaughtServiceTaskError)
    assert cause.status_code == 400  # permanent: the backend does not retry it (§3.5)
    assert str(cause) == (
        "Received error code 'InvalidParameters' from service 'example/Example' ::: "
        "400 (Bad Request) - The request was received by the service, but it was not understood. ::: "
        "The original message: Invalid parameters for example/Example: message is required."
    )
    assert state_of(raised.value.task.workflow, "call_example") == "ERROR"
    (exchange,) = delegate.exchanges
    assert "message" not in exchange["request"]
    assert exchange["status_code"] == 400
    assert_v2_envelope(exchange)


def test_invalid_parameters_caught_by_error_boundary_event(delegate):
    """(d') The same error, caught by an error boundary event with code ``InvalidParameters`` (§3.4)."""
    workflow = run("example_invalid_params_caught", delegate)

    assert workflow.completed
    assert state_of(workflow, "handled") == "COMPLETED"
    assert state_of(workflow, "not_handled") == "CANCELLED"
    error = workflow.data["service_error"]
    assert error == {
        "error_code": "InvalidParameters",
        "message": "Invalid parameters for example/Example: message is required.",
        "operator_identifier": "example/Example",
        "status_code": 400,
        "command_response_body": error["command_response_body"],
    }
    # The body is the command_response text plus operator_identifier, as a JSON string (§3.4).
    assert json.loads(error["command_response_body"]) == {
        "body": None,
        "mimetype": "application/json",
        "http_status": 400,
        "headers": {},
        "operator_identifier": "example/Example",
    }


def test_http_get_exact_json_result(delegate, target_server):
    """(a) ``http/GetRequestV2`` through the proxy: the stored result is exact, big ints included."""
    workflow = run("http_get_item", delegate, base_url=target_server.url)

    assert delegate.exchanges, "the service task never called the proxy"
    exchange = delegate.exchanges[-1]
    assert exchange["status_code"] == 200, exchange["text"]
    envelope = assert_v2_envelope(exchange)
    assert envelope["error"] is None, envelope
    assert workflow.completed
    assert "/item" in target_server.paths
    response = workflow.data["response"]
    assert response == {
        "body": {"id": 123, "big": 12345678901234567890},
        "mimetype": "application/json",
        "http_status": 200,
        "headers": {},
        "operator_identifier": "http/GetRequestV2",
    }
    # Exact ints, not floats that compare equal (§9.4: no google.protobuf.Struct round trip).
    assert type(response["body"]["id"]) is int
    assert type(response["body"]["big"]) is int
    assert type(response["http_status"]) is int


def test_http_404_caught_by_error_boundary_event(delegate, target_server):
    """(b) Upstream 404 → error code ``HttpError404`` → the boundary path, payload in ``service_error``."""
    workflow = run("http_get_missing", delegate, base_url=target_server.url)

    assert delegate.exchanges, "the service task never called the proxy"
    exchange = delegate.exchanges[-1]
    assert_v2_envelope(exchange)
    assert workflow.completed
    assert "/missing" in target_server.paths
    assert state_of(workflow, "handled") == "COMPLETED"
    assert state_of(workflow, "not_handled") == "CANCELLED"
    error = workflow.data["service_error"]
    assert error["error_code"] == "HttpError404"
    assert error["status_code"] == 404  # from command_response.http_status (§3.2 step 5a)
    assert error["operator_identifier"] == "http/GetRequestV2"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert json.loads(error["command_response_body"]) == {
        "body": {"detail": "no such item"},
        "mimetype": "application/json",
        "http_status": 404,
        "headers": {},
        "operator_identifier": "http/GetRequestV2",
    }


# Ids the backend serves itself and hides from the proxy's catalog (§1.1, §8.6).
INTERNAL_COMMAND_IDS = {f"http/{verb}Request" for verb in ("Delete", "Get", "Head", "Patch", "Post", "Put")}


def test_catalog_offers_every_operator_the_diagrams_use(polyglot_delegate):
    """Each operator in these diagrams is in ``GET /v1/commands`` after the backend's merge (§1.1).

    That is: a modeler could have picked it in Arena's properties panel; ``/v1/commands`` answers
    200 with a JSON array; the backend drops proxy items named like its embedded http commands.
    """
    delegate = polyglot_delegate  # the local connectors and the Node.js server behind the proxy
    response = delegate.client.get(
        f"{delegate.proxy_url}/v1/commands", headers={"User-Agent": "spiffworkflow-backend"}, timeout=15
    )
    assert response.status_code == 200
    catalog = json.loads(response.text)
    assert isinstance(catalog, list)
    offered = {
        item["id"]
        for item in catalog
        if isinstance(item, dict) and item.get("id") not in INTERNAL_COMMAND_IDS
    }
    used = set()
    for diagram in sorted(DIAGRAMS.glob("*.bpmn")):
        spec = load_workflow(diagram, diagram.stem, BackendScriptEngine(delegate)).spec
        used |= {t.operation_name for t in spec.task_specs.values() if hasattr(t, "operation_name")}
    assert used == {
        "ai/LlmRequest",
        "example/Example",
        "example/Delay",
        "http/GetRequestV2",
        "jsonata/Evaluate",
        "rand/Number",
        "artifacts/GenerateArtifact",
        "smtp/SendEmail",
    }
    assert used <= offered, f"missing from the catalog: {sorted(used - offered)}"


@pytest.fixture
def polyglot_delegate(polyglot_proxy_process) -> Iterator[BackendServiceDelegate]:
    with httpx.Client(trust_env=False, follow_redirects=True) as client:
        yield BackendServiceDelegate(polyglot_proxy_process.url, client)


def test_a_node_connector_behind_the_proxy_computes_from_task_data(polyglot_delegate):
    """``jsonata/Evaluate``, served by the Node.js server behind the proxy: the diagram passes task
    data as ``input`` and a variable as a binding; the result lands in the task's variable."""
    order = {"lines": [{"quantity": 2, "price": 10}, {"quantity": 1, "price": 5}]}
    workflow = run("jsonata_evaluate", polyglot_delegate, order=order, discount=0.1)

    assert workflow.completed
    assert workflow.data["total"]["body"] == 22.5
    assert workflow.data["total"]["http_status"] == 200
    assert workflow.data["total"]["operator_identifier"] == "jsonata/Evaluate"
    (exchange,) = polyglot_delegate.exchanges
    envelope = assert_v2_envelope(exchange)
    assert envelope["error"] is None
    # The local connectors are still there, in the same catalogue.
    ids = {c["id"] for c in httpx.get(f"{polyglot_delegate.proxy_url}/v1/commands", timeout=5).json()}
    assert {"jsonata/Evaluate", "example/Example", "http/GetRequestV2"} <= ids


def test_a_node_connectors_error_code_is_caught_by_a_boundary_event(polyglot_delegate):
    """A JSONata syntax error is ``400 JsonataSyntaxError``: an error boundary event on that code
    catches it, as for a Python connector's error."""
    workflow = run("jsonata_syntax_error_caught", polyglot_delegate)

    assert workflow.completed
    assert state_of(workflow, "handled") == "COMPLETED"
    error = workflow.data["service_error"]
    assert error["error_code"] == "JsonataSyntaxError"
    assert error["status_code"] == 400
    assert "position" in error["message"]
    assert error["operator_identifier"] == "jsonata/Evaluate"
