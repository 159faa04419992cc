"""Constraints declared on fields (minimum, maximum, lengths, pattern): one check for every caller."""

from __future__ import annotations

import pytest
from spiff.connector.aws.v1 import aws_pb2
from spiff.connector.example.v1 import example_pb2
from spiff.connector.http.v1 import http_pb2
from spiff.connector.smtp.v1 import smtp_pb2

from server.errors import InvalidParameters, Violation
from server.schema import MessagePlan


@pytest.mark.parametrize(
    ("request_message", "violations"),
    [
        pytest.param(aws_pb2.ScanDynamoTableRequest(table_name="t", limit=1, page_size=5), [], id="in-range"),
        pytest.param(aws_pb2.ScanDynamoTableRequest(table_name="t"), [], id="absent"),
        pytest.param(
            aws_pb2.ScanDynamoTableRequest(table_name="t", limit=0, page_size=-3),
            [Violation("limit", "must be at least 1"), Violation("page_size", "must be at least 1")],
            id="below-minimum",
        ),
        pytest.param(
            aws_pb2.GetPresignedUrlRequest(bucket="b", object_name="o", expires_in=604801, content_type="é"),
            [
                Violation("expires_in", "must be between 1 and 604800"),
                Violation("content_type", "must match [ -~]*"),
            ],
            id="above-maximum-and-pattern",
        ),
        pytest.param(
            smtp_pb2.SendEmailRequest(smtp_port=70000),
            [Violation("smtp_port", "must be between 1 and 65535")],
            id="required-field",
        ),
        pytest.param(
            http_pb2.GetRequestV2Request(url="http://x", timeout=0.0),
            [Violation("timeout", "must be greater than 0")],
            id="exclusive-minimum",
        ),
        pytest.param(example_pb2.DelayRequest(seconds=86400), [], id="at-maximum"),
    ],
)
def test_values_outside_declared_constraints_are_named(request_message, violations):
    plan = MessagePlan(request_message.DESCRIPTOR)
    assert plan.out_of_bounds(request_message) == violations
    if violations:
        with pytest.raises(InvalidParameters) as raised:
            plan.check(request_message)
        assert raised.value.to_failure().violations == tuple(violations)
    else:
        plan.check(request_message)
