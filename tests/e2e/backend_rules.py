"""spiff-arena's service-task machinery, re-created for tests so a real engine judges the proxy.

Everything here mirrors sartography/spiff-arena's backend (``service_task_delegate.py``,
``custom_service_task.py``) as described in ``/work/shared/spec/spiff-protocol.md``; section
numbers below refer to that document. The only substitutions: ``httpx`` (sync) instead of
``requests``, and fixed values instead of Flask config / the database (backend URL, process
instance id, model identifier, and ``secrets``, a dict standing in for the secret store). Of §2.2,
``secret:<name>`` values are substituted; ``file:`` and ``SPIFF_SECRET:`` are not (no diagram here
uses them).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import httpx
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.parser.BpmnParser import full_tag
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.bpmn.serializer.helpers.registry import DefaultRegistry
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import ServiceTaskParser
from SpiffWorkflow.spiff.specs.defaults import ServiceTask
from SpiffWorkflow.spiff.specs.event_definitions import ErrorEventDefinition, EscalationEventDefinition
from SpiffWorkflow.util.task import TaskState

__all__ = [
    "Accepted202Exception",
    "BackendScriptEngine",
    "BackendServiceDelegate",
    "CustomServiceTask",
    "Exchange",
    "ServiceTaskErrorDict",
    "UncaughtServiceTaskError",
    "load_workflow",
]

logger = logging.getLogger(__name__)

CONNECTOR_PROXY_COMMAND_TIMEOUT = 45  # seconds; a constant in the backend, not configurable (§0.2)
BACKEND_URL = "http://localhost:7000"  # SPIFFWORKFLOW_BACKEND_URL's default (§0.2)


class UncaughtServiceTaskError(Exception):
    """An error no BPMN event caught (§3.4); ``status_code`` drives the backend's retry decision (§3.5)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Accepted202Exception(Exception):
    """The proxy answered 202: the task waits for a callback (§3.2 step 6, §4.2)."""


class ServiceTaskErrorDict(TypedDict):
    """The payload a catching BPMN event receives (§3.2 step 5d)."""

    error_code: str
    message: str
    operator_identifier: str
    status_code: int
    command_response_body: Any


class Exchange(TypedDict):
    """One ``/v1/do`` round trip as the delegate saw it, kept for assertions and failure messages."""

    operator_identifier: str
    request: dict[str, Any]
    status_code: int
    text: str


_STATUS_PHRASES = {
    301: "301 (Permanent Redirect) - you may need to use a different URL in this service task.",
    302: "302 (Temporary Redirect) - you may need to use a different URL in this service task.",
    400: "400 (Bad Request) - The request was received by the service, but it was not understood.",
    401: "401 (Unauthorized Error) - this end point requires some form of authentication.",
    403: "403 (Forbidden) - The service you called refused to accept the request.",
    404: "404 (Not Found) - The service did not find the requested resource.",
    500: "500 (Internal Server Error) - The service you called is experiencing technical difficulties.",
    501: (
        "501 (Not Implemented) - This service needs to be called with the different method "
        "(like POST not GET)."
    ),
}


class BackendServiceDelegate:
    """``ServiceTaskDelegate``: posts one service task to the proxy and interprets the answer.

    ``call_connector`` builds the body (§2, §2.3, §2.4), posts it (§1.0, §1.3), parses the
    reply with the exact order of §3.2 and hands errors to ``catch_error_codes`` (§3.4).
    """

    def __init__(
        self,
        proxy_url: str,
        client: httpx.Client,
        *,
        process_instance_id: int | None = 42,
        process_model_identifier: str | None = "e2e/service_task",
        backend_url: str = BACKEND_URL,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.secrets = {} if secrets is None else secrets
        self.proxy_url = proxy_url
        self.client = client
        self.process_instance_id = process_instance_id
        self.process_model_identifier = process_model_identifier
        self.backend_url = backend_url
        self.exchanges: list[Exchange] = []

    def call_connector(self, operator_identifier: str, bpmn_params: dict[str, Any], spiff_task: Any) -> str:
        """Returns the JSON text the service task stores (§3.3), or raises as the backend does."""
        call_url = f"{self.proxy_url}/v1/do/{operator_identifier}"  # plain concatenation (§1.3)
        params: dict[str, Any] = {k: self.with_secrets(v["value"]) for k, v in bpmn_params.items()}
        # §2.3: added after the BPMN params, so they overwrite same-named ones.
        params["spiff__process_instance_id"] = self.process_instance_id
        params["spiff__process_model_identifier"] = self.process_model_identifier
        params["spiff__task_id"] = str(spiff_task.id)
        params["spiff__task_data"] = spiff_task.data
        params["spiff__callback_url"] = (
            f"{self.backend_url.rstrip('/')}/v1.0/tasks/{self.process_instance_id}/{spiff_task.id}/callback"
        )
        params = DefaultRegistry().convert(params)  # datetime/UUID/timedelta → tagged dicts (§2.4)

        response_text = ""
        status_code = 0
        parsed: Any = {}
        try:
            # requests' json=: json.dumps(allow_nan=False), ASCII-escaped, UTF-8 (§2.4).
            content = json.dumps(params, allow_nan=False).encode()
            response = self.client.post(
                call_url,
                content=content,
                headers={"Content-Type": "application/json", "User-Agent": "spiffworkflow-backend"},
                timeout=CONNECTOR_PROXY_COMMAND_TIMEOUT,
            )
            status_code = response.status_code
            response_text = response.text
        except Exception as exception:  # §3.2 step 1: any failure becomes a 500 with the class name
            status_code = status_code or 500
            parsed = {"error": {"error_code": exception.__class__.__name__, "message": str(exception)}}
        self.exchanges.append(
            Exchange(
                operator_identifier=operator_identifier,
                request=params,
                status_code=status_code,
                text=response_text,
            )
        )

        if "error" not in parsed:  # §3.2 step 2
            try:
                parsed = json.loads(response_text or "{}")
            except json.JSONDecodeError:
                parsed = {
                    "error": {
                        "error_code": "ServiceTaskOperatorReturnedInvalidJsonError",
                        "message": response_text,
                    }
                }

        if "spiff__logs" in parsed:  # §3.2 step 3
            for log in parsed["spiff__logs"]:
                logger.info("Log from connector %s: %s", operator_identifier, log)
            if "api_response" in parsed:
                parsed = parsed["api_response"]
                response_text = json.dumps(parsed)

        if "command_response_version" in parsed and parsed["command_response_version"] > 1:  # step 4
            new_response = parsed["command_response"]
            new_response["operator_identifier"] = operator_identifier
            response_text = json.dumps(new_response)

        self.check_for_errors(spiff_task, parsed, status_code, response_text, operator_identifier)

        if status_code == 202:  # step 6
            raise Accepted202Exception

        if "refreshed_token_set" not in parsed:  # step 8
            return response_text or "{}"
        # Step 7 (OAuth refresh): the backend stores the token set as the secret named by "auth" first.
        self.secrets[parsed["auth"]] = json.dumps(parsed["refreshed_token_set"])
        return json.dumps(parsed["api_response"])

    def with_secrets(self, value: Any) -> Any:
        """§2.2 ``value_with_secrets_replaced``: a string starting with ``secret:`` becomes that
        secret; dict values are descended into, lists are not. A missing secret fails the task."""
        if isinstance(value, dict):
            return {k: self.with_secrets(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("secret:"):
            name = value.removeprefix("secret:")
            if name not in self.secrets:
                msg = f"missing_secret_error: {name}"
                raise UncaughtServiceTaskError(msg)
            return self.secrets[name]
        return value

    def check_for_errors(
        self,
        spiff_task: Any,
        parsed: Any,
        status_code: int,
        response_text: str,
        operator_identifier: str,
    ) -> None:
        """§3.2 step 5, ``check_for_errors`` line for line."""
        base_error: dict[str, Any] | None = None
        error_status_code = status_code

        if (  # 5a: an upstream status ≥ 300 in a v2 envelope
            "command_response_version" in parsed
            and parsed.get("command_response_version", 0) > 1
            and isinstance(parsed.get("command_response"), dict)
        ):
            upstream_status = parsed["command_response"].get("http_status")
            if isinstance(upstream_status, int) and upstream_status >= 300:
                error_status_code = upstream_status
                base_error = {
                    "error_code": f"ServiceTaskHttpError{error_status_code}",
                    "message": (
                        f"Service task received HTTP {error_status_code} from upstream service. "
                        f"Response: {response_text}"
                    ),
                }

        if "error" in parsed and isinstance(parsed["error"], dict) and "error_code" in parsed["error"]:
            base_error = parsed["error"]  # 5b: the proxy's own error wins
        elif not base_error and status_code >= 300:  # 5c
            error_message = ""
            if "error" in parsed:
                error_response = parsed["error"] or ""
                if isinstance(error_response, list | dict):
                    error_response = json.dumps(error_response)
                else:
                    error_response = str(error_response) if error_response is not None else ""
                error_message += error_response
            if not error_message:
                error_message = response_text
            error_message += " A critical component (The connector proxy) is not responding correctly."
            base_error = {"error_code": "ServiceTaskOperatorReturnedBadStatusError", "message": error_message}

        if base_error is not None:  # 5d
            error_dict = ServiceTaskErrorDict(
                error_code=base_error["error_code"],
                message=base_error["message"],
                operator_identifier=operator_identifier,
                status_code=error_status_code,
                command_response_body=response_text,
            )
            self.catch_error_codes(spiff_task, error_dict)

    @staticmethod
    def catch_error_codes(spiff_task: Any, error: ServiceTaskErrorDict) -> None:
        """§3.4: offer the error to BPMN as an error and an escalation event with ``code = error_code``.

        Uses the same public SpiffWorkflow calls as the backend: a ``BpmnEvent`` carrying the
        payload, ``get_tasks(catches_event=...)`` on the task's workflow and then on the top
        workflow, and ``top_workflow.catch(event)``. A catching event whose definition has no code
        catches everything (``CodeEventDefinition.__eq__``). If nothing catches, the backend
        raises ``UncaughtServiceTaskError`` with its three-part message.

        As in the backend, a caught error does **not** stop ``call_connector``: it returns the
        response text, the service task completes, and the interrupting boundary event (already
        READY) takes over the flow.
        """
        task_workflow = spiff_task.workflow
        top_level_workflow = task_workflow.top_workflow
        task_caught_event = False
        for event_definition_class in (ErrorEventDefinition, EscalationEventDefinition):
            event_definition = event_definition_class(name=error["error_code"], code=error["error_code"])
            bpmn_event = BpmnEvent(event_definition, payload=error, target=task_workflow)
            tasks = task_workflow.get_tasks(catches_event=bpmn_event, state=TaskState.NOT_FINISHED_MASK)
            if len(tasks) == 0:
                tasks = top_level_workflow.get_tasks(
                    catches_event=bpmn_event, state=TaskState.NOT_FINISHED_MASK
                )
                bpmn_event = BpmnEvent(event_definition, payload=error)
            if len(tasks) > 0:
                top_level_workflow.catch(bpmn_event)
                task_caught_event = True

        if not task_caught_event:
            code = error["status_code"]
            message = [
                f"Received error code '{error['error_code']}' from service '{error['operator_identifier']}'",
                _STATUS_PHRASES.get(code, f"HTTP Status Code {code}."),
                f"The original message: {error['message']}",
            ]
            raise UncaughtServiceTaskError(" ::: ".join(message), status_code=code)


class BackendScriptEngine(PythonScriptEngine):  # type: ignore[misc]
    """The backend's script engine, reduced to the service hook.

    SpiffWorkflow evaluates the parameter expressions (``evaluate``, inherited); ``call_service``
    hands the evaluated parameters to the delegate. The keyword signature is SpiffWorkflow's
    (``SpiffWorkflow.spiff.specs.mixins.service_task.ServiceTask._execute`` calls
    ``call_service(task, operation_name=..., operation_params=...)``), so the stock spiff
    ``ServiceTask`` works with it as well; the backend's engine takes the same three values
    positionally. The stock ``PythonScriptEngine.call_service`` is not usable: it refers to an
    undefined ``script`` when the call fails.
    """

    def __init__(self, delegate: BackendServiceDelegate) -> None:
        super().__init__(environment=TaskDataEnvironment())
        self.delegate = delegate

    def call_service(
        self, task: Any, operation_name: str, operation_params: dict[str, Any], **kwargs: Any
    ) -> str:
        return self.delegate.call_connector(operation_name, operation_params, task)


class CustomServiceTask(ServiceTask):  # type: ignore[misc]
    """The backend's ``CustomServiceTask._execute``: 202 leaves the task STARTED; failures wrap.

    A ``None`` return makes SpiffWorkflow mark the task STARTED (waiting for the callback, §4);
    any other exception becomes ``WorkflowTaskException("Error executing Service Task")`` raised
    from the original (``__cause__``, e.g. ``UncaughtServiceTaskError``), and the task goes to ERROR.
    """

    def _execute(self, spiff_task: Any) -> bool | None:
        def evaluate(param: dict[str, Any]) -> dict[str, Any]:
            param["value"] = spiff_task.workflow.script_engine.evaluate(spiff_task, param["value"])
            return param

        evaluated_params = {k: evaluate(v) for k, v in copy.deepcopy(self.operation_params).items()}
        try:
            result = spiff_task.workflow.script_engine.call_service(
                spiff_task, operation_name=self.operation_name, operation_params=evaluated_params
            )
        except Accepted202Exception:
            return None
        except Exception as e:
            wte = WorkflowTaskException("Error executing Service Task", task=spiff_task, exception=e)
            wte.add_note(str(e))
            raise wte from e
        spiff_task.data[self.result_variable] = json.loads(result)
        return True


class _BackendParser(SpiffBpmnParser):  # type: ignore[misc]
    """The backend's ``MyCustomParser``: the spiff flavor with ``CustomServiceTask``.

    Built on a copy of the spiff parser table (the backend updates the shared dict in place).
    """

    OVERRIDE_PARSER_CLASSES: ClassVar[dict[str, tuple[type, type]]] = {
        **SpiffBpmnParser.OVERRIDE_PARSER_CLASSES,
        full_tag("serviceTask"): (ServiceTaskParser, CustomServiceTask),
    }


def load_workflow(diagram: Path, process_id: str, engine: BackendScriptEngine) -> Any:
    """Parses one ``.bpmn`` file and returns a fresh ``BpmnWorkflow`` run by ``engine``."""
    parser = _BackendParser()
    parser.add_bpmn_file(str(diagram))
    spec = parser.get_spec(process_id)
    return BpmnWorkflow(spec, parser.get_subprocess_specs(process_id), script_engine=engine)
