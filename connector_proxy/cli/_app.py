"""The ``connector-proxy`` commands: what each takes and prints (the work is in the other modules)."""

from __future__ import annotations

import functools
import os
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from connector_proxy.cli import _render
from connector_proxy.cli._arguments import parse_body
from connector_proxy.cli._errors import EXIT_CODES_HELP, CommandFailed, RequestRefused, Unreachable, answered
from connector_proxy.cli._rest import Answer, RestClient, check_url, error_of

if TYPE_CHECKING:
    from connector_proxy.cli._grpc import Session

__all__ = ["cli"]

DEFAULT_URL = "http://127.0.0.1:7004"
DEFAULT_GRPC_TARGET = "127.0.0.1:50051"
API_KEY_VARIABLE = "CONNECTOR_PROXY_API_KEY"
JOB_STATES = ("queued", "running", "delivering", "delivered", "failed")
T = TypeVar("T")


class Proxy:
    """Where the proxy is, as the options say, and the API key from the environment."""

    def __init__(self, url: str, grpc_target: str, timeout: float) -> None:
        self.url = url
        self.grpc_target = grpc_target
        self.timeout = timeout
        # Only ever from the environment: an argument would be visible to every user of the machine.
        self.api_key = os.environ.get(API_KEY_VARIABLE) or None

    def rest(self) -> RestClient:
        return RestClient(self.url, self.api_key, self.timeout)

    def grpc(self, work: Callable[[Session], Awaitable[T]]) -> T:
        """Runs ``work(session)`` (a coroutine function of :mod:`._grpc`) on the gRPC port."""
        from connector_proxy.cli import _grpc  # grpc and the schema code load only when asked for

        return _grpc.run(self.grpc_target, self.api_key, self.timeout, work)


def _check_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _proxy_options(func: Callable[..., None]) -> Callable[..., None]:
    """``--url``, ``--grpc-target`` and ``--timeout``, handed to the command as one ``proxy``."""

    @functools.wraps(func)
    def with_proxy(*args: Any, url: str, grpc_target: str, timeout: float, **kwargs: Any) -> None:
        func(*args, proxy=Proxy(url, grpc_target, timeout), **kwargs)

    options = [
        click.option(
            "--url",
            metavar="URL",
            envvar="CONNECTOR_PROXY_URL",
            default=DEFAULT_URL,
            show_default=True,
            show_envvar=True,
            callback=_check_url,
            help="The proxy's REST base URL, with its path prefix if it has one.",
        ),
        click.option(
            "--grpc-target",
            metavar="TARGET",
            envvar="CONNECTOR_PROXY_GRPC_TARGET",
            default=DEFAULT_GRPC_TARGET,
            show_default=True,
            show_envvar=True,
            help="The proxy's gRPC port, for --grpc: host:port, or grpcs://host:port for TLS.",
        ),
        click.option(
            "--timeout",
            metavar="SECONDS",
            type=click.FloatRange(min=0, min_open=True),
            default=60.0,
            show_default=True,
            help="Seconds to wait for the proxy's answer.",
        ),
    ]
    decorated: Callable[..., None] = with_proxy
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _echo_json(value: Any) -> None:
    click.echo(_render.json_text(value))


def _echo_lines(lines: list[str]) -> None:
    click.echo(_render.fit(lines, sys.stdout.isatty()))


def _echo_logs(logs: Any) -> None:
    for line in logs if isinstance(logs, list | tuple) else ():
        click.echo(line, err=True)


def _ok(answer: Answer, *expected: int) -> Any:
    """The payload of an answer with an expected status; otherwise the error it carries."""
    if answer.status in expected:
        return answer.payload
    error_code, message = error_of(answer.payload) or (
        f"HTTP{answer.status}",
        f"the proxy answered {answer.status}",
    )
    raise answered(error_code, message)


_GRPC_HELP = "Over the proxy's gRPC port instead of REST."
_JSON_HELP = "Print the proxy's JSON, for programs."


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(package_name="spiff-connector-proxy", prog_name="connector-proxy")
def cli() -> None:
    """Lists and calls the commands of a spiff connector proxy, shows its jobs and upstreams, and
    scaffolds new connectors.

    The proxy's API key, when it has one, is read from CONNECTOR_PROXY_API_KEY: never from an
    argument, and never printed.
    """


@cli.command(short_help="Lists the commands and their parameters.", epilog=EXIT_CODES_HELP)
@click.argument("prefix", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--grpc", "over_grpc", is_flag=True, help="Read the commands by the gRPC port's reflection.")
@_proxy_options
def commands(prefix: str, as_json: bool, over_grpc: bool, proxy: Proxy) -> None:
    """Lists the commands (those whose id starts with PREFIX, e.g. http/) and their parameters.

    Secret parameters are marked in the TYPE column; defaults are JSON.
    """
    if over_grpc:
        from connector_proxy.cli import _grpc

        listed = proxy.grpc(_grpc.list_commands)
    else:
        listed = _ok(proxy.rest().get("/v1/commands"), 200)
    chosen = [c for c in listed if str(c.get("id", "")).startswith(prefix)]
    if as_json:
        _echo_json(chosen)
    elif not chosen:
        msg = f"no command id starts with {prefix!r}"
        raise RequestRefused(msg, error_code="command_not_found")
    else:
        _echo_lines(_render.commands_table(chosen))


@cli.command(
    short_help="Calls a command and prints its result.",
    epilog="""\b
Examples:
  connector-proxy call example/Example message=hi
  connector-proxy call http/GetRequestV2 url=https://example.com/ attempts:=3
  connector-proxy call http/PostRequestV2 url=https://example.com/ --json '{"data": {"a": 1}}'
  connector-proxy call example/Delay seconds:=5 --async --callback-url http://spiff:7000/v1.0/tasks/1/2/callback

"""
    + EXIT_CODES_HELP,
)
@click.argument("command_id", metavar="COMMAND_ID")
@click.argument("items", nargs=-1, metavar="[key=text | key:=json]...")
@click.option(
    "--json", "body_json", metavar="OBJECT", help="The whole request body, a JSON object ('-': stdin)."
)
@click.option("--grpc", "over_grpc", is_flag=True, help=_GRPC_HELP)
@click.option(
    "--async",
    "run_async",
    is_flag=True,
    help="Ask for a job (Prefer: respond-async): answered 202, the result PUT to the callback URL.",
)
@click.option("--callback-url", metavar="URL", help="spiff__callback_url, where a job's result goes.")
@click.option("--envelope", is_flag=True, help="Print the whole v2 envelope, not only its body (REST).")
@_proxy_options
def call(
    command_id: str,
    items: tuple[str, ...],
    body_json: str | None,
    over_grpc: bool,
    run_async: bool,
    callback_url: str | None,
    envelope: bool,
    proxy: Proxy,
) -> None:
    """Calls COMMAND_ID (connector/Command) and prints its result as JSON.

    Parameters are key=text (a string) or key:=json (a number, true, null, a list or an object:
    attempts:=3, headers:='{"Accept": "text/html"}'); they go over --json's object. The proxy
    coerces where nothing is lost ("5" for an int) and names every invalid parameter.
    spiff__logs lines go to stderr; a failure prints its error_code and message there (and a
    partial result, such as an upstream's error page, on stdout).
    """
    if "/" not in command_id:
        msg = "a command id is connector/Command, e.g. example/Example"
        raise click.BadParameter(msg, param_hint="COMMAND_ID")
    if over_grpc and (run_async or envelope):
        msg = "--async and --envelope are REST's: a gRPC call answers its response message"
        raise click.UsageError(msg)
    if body_json == "-":
        body_json = sys.stdin.read()
    try:
        body = parse_body(body_json, items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="parameters") from None
    if callback_url is not None:
        body["spiff__callback_url"] = callback_url
    if over_grpc:
        _call_grpc(proxy, command_id, body)
    else:
        _call_rest(proxy, command_id, body, run_async=run_async, envelope=envelope)


def _call_rest(
    proxy: Proxy, command_id: str, body: dict[str, Any], *, run_async: bool, envelope: bool
) -> None:
    headers = {"Prefer": "respond-async"} if run_async else {}
    path = "/v1/do/" + urllib.parse.quote(command_id)
    answer = proxy.rest().post(path, body, headers)
    payload = answer.payload
    if not isinstance(payload, dict) or "command_response" not in payload:
        _ok(answer, 200, 202)  # an error without an envelope, e.g. a 404 for an unknown route
        msg = f"{proxy.url} answered {path} without a v2 envelope: is it the proxy?"
        raise Unreachable(msg)
    _echo_logs(payload.get("spiff__logs"))
    result = (payload.get("command_response") or {}).get("body")
    if envelope:
        _echo_json(payload)
    elif result is not None or error_of(payload) is None:
        _echo_json(result)
    failed = error_of(payload)
    if failed is not None:
        raise answered(*failed)
    if answer.status == 202 and isinstance(result, dict) and "job_id" in result:
        click.echo(f"Follow it with: connector-proxy job {result['job_id']}", err=True)


def _call_grpc(proxy: Proxy, command_id: str, body: dict[str, Any]) -> None:
    from connector_proxy.cli import _grpc

    outcome = proxy.grpc(lambda session: _grpc.call_command(session, command_id, body))
    _echo_logs(outcome.logs)
    if outcome.response is not None or outcome.error is None:
        _echo_json(outcome.response)
    if outcome.error is not None:
        raise outcome.error


@cli.command(short_help="Lists the newest jobs (long-running calls).", epilog=EXIT_CODES_HELP)
@click.option(
    "--state", type=click.Choice(JOB_STATES, case_sensitive=False), help="Only the jobs in this state."
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most this many."
)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--grpc", "over_grpc", is_flag=True, help="Over spiff.proxy.v1.JobsService on the gRPC port.")
@_proxy_options
def jobs(state: str | None, limit: int, as_json: bool, over_grpc: bool, proxy: Proxy) -> None:
    """Lists the newest long-running jobs and counts the jobs in each state."""
    if over_grpc:
        from connector_proxy.cli import _grpc

        listed = proxy.grpc(lambda session: _grpc.list_jobs(session, state, limit))
    else:
        query = {"limit": str(limit), **({"state": state.lower()} if state else {})}
        listed = _ok(proxy.rest().get("/v1/jobs", query), 200)
    if as_json:
        _echo_json(listed)
    else:
        _echo_lines(_render.jobs_table(listed))


@cli.command(short_help="Shows one job.", epilog=EXIT_CODES_HELP)
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--grpc", "over_grpc", is_flag=True, help="Over spiff.proxy.v1.JobsService on the gRPC port.")
@_proxy_options
def job(job_id: str, as_json: bool, over_grpc: bool, proxy: Proxy) -> None:
    """Shows one job: its command, state, attempts and last error (never its parameters or result)."""
    if over_grpc:
        from connector_proxy.cli import _grpc

        shown = proxy.grpc(lambda session: _grpc.get_job(session, job_id))
    else:
        shown = _ok(proxy.rest().get("/v1/jobs/" + urllib.parse.quote(job_id, safe="")), 200)
    if as_json:
        _echo_json(shown)
    else:
        _echo_lines(_render.job_fields(shown))


@cli.command(short_help="Sends a failed job's callback again.", epilog=EXIT_CODES_HELP)
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--grpc", "over_grpc", is_flag=True, help="Over spiff.proxy.v1.JobsService on the gRPC port.")
@_proxy_options
def redeliver(job_id: str, as_json: bool, over_grpc: bool, proxy: Proxy) -> None:
    """Sends a failed job's callback again (once what made it fail is fixed); the command does not run
    again. A job that is not failed answers JobNotRedeliverable."""
    if over_grpc:
        from connector_proxy.cli import _grpc

        shown = proxy.grpc(lambda session: _grpc.redeliver_job(session, job_id))
    else:
        path = "/v1/jobs/" + urllib.parse.quote(job_id, safe="") + "/redeliver"
        shown = _ok(proxy.rest().post(path), 202)
    if as_json:
        _echo_json(shown)
    else:
        _echo_lines(_render.job_fields(shown))


@cli.command(short_help="Lists the gRPC servers the proxy fronts.", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@_proxy_options
def upstreams(as_json: bool, proxy: Proxy) -> None:
    """Lists the gRPC servers the proxy fronts (CONNECTOR_PROXY_GRPC_TARGETS): state and commands."""
    shown = _ok(proxy.rest().get("/v1/upstreams"), 200)
    if as_json:
        _echo_json(shown)
    else:
        _echo_lines(_render.upstreams_table(shown))


@cli.command("new-connector", short_help="Scaffolds a new connector.")
@click.argument("name")
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=".",
    show_default=True,
    help="The project's root directory.",
)
@click.option(
    "--no-generate",
    is_flag=True,
    help="Only write the files; run make gen docs afterwards (docs/connectors.md is checked by a test).",
)
def new_connector(name: str, root: Path, no_generate: bool) -> None:
    """Scaffolds the connector NAME (a lowercase identifier): its proto with one command, Hello, at
    protos/spiff/connector/NAME/v1/NAME.proto, its servicer in connectors/NAME.py and a test in
    tests/connectors/test_NAME.py; then regenerates the Python code and docs/connectors.md, so
    make test passes as generated.
    """
    from connector_proxy.cli import _scaffold

    root = root.resolve()
    try:
        _scaffold.check_root(root)
    except _scaffold.ScaffoldError as exc:
        raise click.BadParameter(str(exc), param_hint="--root") from None
    try:
        written = _scaffold.scaffold(root, name)
    except _scaffold.ScaffoldError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    for path in written:
        click.echo(f"created {path.relative_to(root)}")
    if no_generate:
        click.echo("Next: make gen docs (the generated code and docs/connectors.md), then make test.")
        return
    try:
        _scaffold.generate(root)
    except _scaffold.ScaffoldError as exc:
        raise CommandFailed(str(exc), error_code="GenerationFailed") from None
    click.echo("regenerated clients/python and docs/connectors.md")
    click.echo(
        f"Next: describe the connector and its commands in {written[0].relative_to(root)}, implement "
        f"{written[1].relative_to(root)}, add it to README's connector table, then make test."
    )
