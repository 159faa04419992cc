"""jsonata/Evaluate on the Node.js server over a real gRPC channel: results, failures with their
google.rpc details exactly as the Python server sends them, log lines, and the limits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from spiff.connector.jsonata.v1 import jsonata_pb2, jsonata_pb2_grpc

from server.errors import Failure, Violation
from tests.node.calls import (
    BACKTRACKING,
    ENDLESS_RECURSION,
    ENDLESS_TAIL_RECURSION,
    LONG_LOOP,
    assert_failure,
    evaluate,
    evaluate_request,
)
from tests.node.conftest import MAX_DEPTH, TIME_LIMIT_MS, node_server, open_channel

pytestmark = pytest.mark.anyio

TIME_LIMIT = TIME_LIMIT_MS / 1000
# How late a stop may come on a loaded machine: the point is seconds, not the minutes (or the
# crash) an unguarded evaluation takes.
SLACK = 3.0


async def test_a_result_keeps_integers_and_text(channel):
    answer = await evaluate(
        channel,
        '{"total": $sum(items.(price * qty)) * $rate, "names": items.name, "count": $count(items)}',
        input={"items": [{"name": "thé", "price": 2, "qty": 3}, {"name": "茶", "price": 5, "qty": 1}]},
        bindings={"rate": 10},
    )
    assert answer.code == grpc.StatusCode.OK
    assert answer.value == {"total": 110, "names": ["thé", "茶"], "count": 2}
    assert isinstance(answer.value["total"], int)
    assert len(answer.logs) == 1
    assert answer.logs[0].startswith("Evaluated the expression in ")
    assert answer.status_bytes is None


async def test_nothing_is_a_null_body(channel):
    answer = await evaluate(channel, "order.missing.path", input={"order": {}})
    assert answer.code == grpc.StatusCode.OK
    assert answer.value is None
    answer = await evaluate(channel, "$")  # no input at all
    assert (answer.code, answer.value) == (grpc.StatusCode.OK, None)


async def test_the_result_is_json_null_text_not_an_unset_value(channel):
    stub = jsonata_pb2_grpc.JsonataServiceStub(channel)  # type: ignore[no-untyped-call]
    response = await stub.Evaluate(jsonata_pb2.EvaluateRequest(expression="nothing"), timeout=10)
    assert response.HasField("result")
    assert response.result.json == "null"


async def test_a_syntax_error_names_the_jsonata_code_and_position(channel):
    answer = await evaluate(channel, "a.(b")
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "JsonataSyntaxError")
    assert "S0203" in answer.details
    assert "position 4" in answer.details
    assert (
        answer.details
        == 'The expression does not parse: S0203 at position 4: Expected ")" before end of expression.'
    )


async def test_an_evaluation_error_names_the_jsonata_code(channel):
    answer = await evaluate(channel, '"a" + 1')
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "JsonataEvaluationError")
    assert "T2001 at position 5" in answer.details
    assert len(answer.logs) == 1
    assert answer.logs[0].startswith("The evaluation failed after ")

    raised = await evaluate(channel, '$error("the order has no lines")')
    assert_failure(raised, grpc.StatusCode.INVALID_ARGUMENT, "JsonataEvaluationError")
    assert "the order has no lines" in raised.details


async def test_a_missing_expression_is_a_bad_request_like_the_python_servers(channel):
    answer = await evaluate(channel, "", input={"a": 1})
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameters")
    assert answer.details == "Missing required parameters: expression."
    assert answer.failure.violations == (Violation("expression", "is required"),)
    # Byte for byte what server/errors.py sends for the same failure.
    python = Failure(
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidParameters",
        "Missing required parameters: expression.",
        (Violation("expression", "is required"),),
    )
    assert answer.status_bytes == python.to_status().SerializeToString()
    assert answer.logs == []


async def test_bad_bindings_and_input_are_reported_together(channel):
    request = jsonata_pb2.EvaluateRequest(expression="$x")
    request.input.json = "{not json"
    request.bindings.json = "[1, 2]"
    answer = await evaluate_request(channel, request)
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameters")
    assert answer.failure.violations == (
        Violation("input", "is not valid JSON"),
        Violation("bindings", "must be a JSON object"),
    )
    assert answer.details == "Invalid parameters: input is not valid JSON; bindings must be a JSON object."
    status = answer.status
    assert status is not None
    assert [d.type_url for d in status.details] == [
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
    ]
    bad_request = error_details_pb2.BadRequest()
    status.details[1].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["input", "bindings"]


async def test_a_number_json_cannot_hold_is_invalid(channel):
    request = jsonata_pb2.EvaluateRequest(expression="$")
    request.input.json = "[1e400]"
    answer = await evaluate_request(channel, request)
    assert answer.failure.violations == (Violation("input", "is not valid JSON"),)


async def test_integers_beyond_2_53_are_flagged_in_the_logs(channel):
    answer = await evaluate(channel, "n", input={"n": 2**64})
    assert answer.code == grpc.StatusCode.OK
    assert answer.value != 2**64  # JSONata's numbers are doubles
    assert any("input holds 1 integer beyond ±2^53" in line for line in answer.logs)
    exact = await evaluate(channel, "n", input={"n": 2**53 - 1})
    assert exact.value == 2**53 - 1
    assert not any("beyond" in line for line in exact.logs)


async def test_a_function_result_is_an_error_not_a_silent_null(channel):
    answer = await evaluate(channel, "function($x){$x}")
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "JsonataResultNotJson")
    assert answer.details == "The result is a function, which JSON cannot represent."
    nested = await evaluate(channel, '{"sum": $sum}')
    assert_failure(nested, grpc.StatusCode.INVALID_ARGUMENT, "JsonataResultNotJson")
    assert 'under the key "sum"' in nested.details


async def test_endless_recursion_meets_the_depth_limit(channel):
    answer = await evaluate(channel, ENDLESS_RECURSION)
    assert_failure(answer, grpc.StatusCode.INVALID_ARGUMENT, "JsonataDepthLimit")
    assert f"deeper than {MAX_DEPTH} evaluation steps" in answer.details
    assert "position" in answer.details
    assert len(answer.logs) == 1
    assert answer.logs[0].startswith("Stopped the evaluation after ")


async def test_deep_recursion_within_the_limit_and_wide_data_pass(channel):
    answer = await evaluate(channel, "($f := function($n){$n = 0 ? 0 : 1 + $f($n - 1)}; $f(100))")
    assert (answer.code, answer.value) == (grpc.StatusCode.OK, 100)
    # Group-by over many keys evaluates them concurrently: not depth.
    rows = [{"id": f"k{i}", "v": i} for i in range(3000)]
    grouped = await evaluate(channel, "$count($keys(${ id: v }))", input=rows)
    assert (grouped.code, grouped.value) == (grpc.StatusCode.OK, 3000)


@pytest.mark.slow
@pytest.mark.parametrize("expression", [ENDLESS_TAIL_RECURSION, LONG_LOOP], ids=["tail-recursion", "loop"])
async def test_an_endless_evaluation_meets_the_time_limit(channel, expression):
    answer = await evaluate(channel, expression)
    assert_failure(answer, grpc.StatusCode.DEADLINE_EXCEEDED, "JsonataTimeLimit")
    assert f"longer than {TIME_LIMIT_MS} ms" in answer.details
    assert TIME_LIMIT <= answer.elapsed < TIME_LIMIT + SLACK
    assert len(answer.logs) == 1
    assert answer.logs[0].startswith("Stopped the evaluation after ")


@pytest.mark.slow
async def test_work_the_step_hooks_cannot_interrupt_is_stopped_and_the_worker_replaced(tmp_path):
    # A server of its own: replacing a worker takes a moment the other tests should not wait for.
    with node_server({"CONNECTOR_PROXY_JSONATA_WORKERS": "1"}, tmp_path / "server.log") as server:
        async with open_channel(server.target) as channel:
            answer = await evaluate(channel, BACKTRACKING)
            assert_failure(answer, grpc.StatusCode.DEADLINE_EXCEEDED, "JsonataTimeLimit")
            assert answer.elapsed < TIME_LIMIT + SLACK
            # The only worker was stuck: it was terminated, and its replacement serves.
            assert (await evaluate(channel, "$sum([1, 2])")).value == 3
        assert "did not stop within" in server.log_text()


@pytest.mark.slow
async def test_a_runaway_evaluation_does_not_hold_up_other_calls(channel):
    runaway = asyncio.create_task(evaluate(channel, ENDLESS_TAIL_RECURSION))
    await asyncio.sleep(0.05)
    quick = await evaluate(channel, "$uppercase(name)", input={"name": "ok"})
    assert (quick.code, quick.value) == (grpc.StatusCode.OK, "OK")
    # Answered while the runaway still runs: evaluated on the server's own thread, it would have
    # waited for the runaway's answer.
    assert not runaway.done()
    assert (await runaway).code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_cancelled_call_frees_its_worker_at_once(tmp_path):
    env = {"CONNECTOR_PROXY_JSONATA_WORKERS": "1", "CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": "20000"}
    with node_server(env, tmp_path / "server.log") as server:
        async with open_channel(server.target) as channel:
            stub = jsonata_pb2_grpc.JsonataServiceStub(channel)  # type: ignore[no-untyped-call]
            endless = stub.Evaluate(jsonata_pb2.EvaluateRequest(expression=LONG_LOOP), timeout=30)
            await asyncio.sleep(0.2)
            endless.cancel()
            quick = await evaluate(channel, "$sum([1, 2])", timeout=30)
    assert quick.value == 3
    # The only worker was freed by the cancellation, not by the 20 s time limit.
    assert quick.elapsed < 5


async def test_a_deadline_shorter_than_the_evaluation_is_answered_before_it(channel):
    answer = await evaluate(channel, LONG_LOOP, timeout=0.5)  # shorter than the time limit
    # As the Python server: the call's time rounded to 0.1 s, answered 50 ms before it, with
    # its details (a deadline the client reached first would carry none).
    assert_failure(answer, grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded")
    assert answer.details == "The command did not finish within 0.5 s."
    assert answer.elapsed >= 0.4


async def test_concurrent_calls_get_their_own_answers(channel):
    answers = await asyncio.gather(*(evaluate(channel, "$ * 2", input=i) for i in range(20)))
    assert [a.value for a in answers] == [i * 2 for i in range(20)]
