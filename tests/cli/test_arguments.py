"""The parts of the command line that need no proxy: httpie-style parameters and the tables."""

from __future__ import annotations

import pytest

from connector_proxy.cli._arguments import parse_body, parse_items
from connector_proxy.cli._render import fit, jobs_table, table

BIG = 12345678901234567890123


@pytest.mark.parametrize(
    ("item", "parsed"),
    [
        pytest.param("message=hi", {"message": "hi"}, id="text"),
        pytest.param("attempts=3", {"attempts": "3"}, id="digits-as-text"),
        pytest.param("attempts:=3", {"attempts": 3}, id="int"),
        pytest.param(f"big:={BIG}", {"big": BIG}, id="big-int"),
        pytest.param("ratio:=0.5", {"ratio": 0.5}, id="float"),
        pytest.param("flag:=true", {"flag": True}, id="bool"),
        pytest.param("gone:=null", {"gone": None}, id="null"),
        pytest.param('headers:={"a": 1}', {"headers": {"a": 1}}, id="object"),
        pytest.param("ids:=[1, 2]", {"ids": [1, 2]}, id="list"),
        pytest.param("query=a=b", {"query": "a=b"}, id="equals-in-text"),
        pytest.param("url=https://x/?a:=b", {"url": "https://x/?a:=b"}, id="colon-equals-in-text"),
        pytest.param("empty=", {"empty": ""}, id="empty-text"),
    ],
)
def test_items_are_text_or_json(item, parsed):
    assert parse_items([item]) == parsed


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        pytest.param("message", "neither key=text nor key:=json", id="no-equals"),
        pytest.param("=hi", "no parameter name", id="no-key"),
        pytest.param(":=1", "no parameter name", id="no-key-json"),
        pytest.param("n:=nope", "the value of n is not JSON", id="not-json"),
        pytest.param("n:=NaN", "not JSON", id="nan"),
        pytest.param("n:=1e400", "not JSON", id="overflow"),
    ],
)
def test_malformed_items_are_refused(item, problem):
    with pytest.raises(ValueError, match=problem):
        parse_items([item])


def test_items_go_over_the_json_body_and_later_items_win():
    body = parse_body('{"message": "a", "seconds": 1}', ["message=b", "seconds:=2", "seconds:=3"])
    assert body == {"message": "b", "seconds": 3}


@pytest.mark.parametrize("text", ["[1]", '"text"', "null", "{"])
def test_the_json_body_must_be_an_object(text):
    with pytest.raises(ValueError, match="--json"):
        parse_body(text, [])


def test_tables_align_columns_and_leave_the_last_ragged():
    lines = table(["A", "LONGER", "LAST"], [["xyz", None, "a long\ndescription"], ["", 3, True]])
    assert lines == ["A    LONGER  LAST", "xyz          a long description", "     3       true"]


def test_fit_cuts_lines_to_the_terminal_only_on_one(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the width shutil reports first
    long = "x" * 500
    assert fit([long, "short"], is_terminal=False) == f"{long}\nshort"
    assert fit([long, "short"], is_terminal=True) == f"{'x' * 99}…\nshort"


def test_the_jobs_table_counts_every_state():
    answer = {"jobs": [], "counts": {"failed": 2, "queued": 1, "running": 0, "delivering": 0, "delivered": 5}}
    assert jobs_table(answer) == [
        "No jobs.",
        "All jobs: 1 queued, 0 running, 0 delivering, 5 delivered, 2 failed",
    ]
