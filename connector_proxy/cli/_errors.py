"""What can go wrong on the command line, and the exit code each gives.

    click.ClickException
     └── CliError                 an answer or a problem worth an error_code; printed to stderr
          ├── CommandFailed       1: the command, or the proxy, answered an error
          ├── RequestRefused      2: the request is wrong (an unknown command, invalid parameters),
          │                          whether found here or by the proxy
          ├── Unreachable         3: the proxy could not be reached, or did not answer its protocol
          └── Unauthorized        4: the proxy refused the API key

Usage errors (a bad option or argument) are click's own and exit 2 as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Any

import click

__all__ = [
    "COMMAND_FAILED",
    "EXIT_CODES_HELP",
    "REFUSED_ERROR_CODES",
    "REQUEST_REFUSED",
    "UNAUTHORIZED",
    "UNREACHABLE",
    "CliError",
    "CommandFailed",
    "RequestRefused",
    "Unauthorized",
    "Unreachable",
    "answered",
    "key_refused",
]

COMMAND_FAILED = 1
REQUEST_REFUSED = 2
UNREACHABLE = 3
UNAUTHORIZED = 4

# The proxy's error codes that mean "the request is wrong, nothing ran": the same exit code as when
# the command line finds the mistake itself (over gRPC, parameters are checked before the call).
REFUSED_ERROR_CODES = frozenset(
    {
        "InvalidParameters",
        "InvalidJson",
        "command_not_found",
        "CallbackUrlRequired",
        "InvalidCallbackUrl",
        "PayloadTooLarge",
    }
)

EXIT_CODES_HELP = """\b
Exit codes:
  0  success (for --async: the job was accepted)
  1  the command or the proxy answered an error (its error_code and message on stderr)
  2  the request is wrong: a usage error, an unknown command, invalid parameters
  3  the proxy could not be reached or did not answer its protocol
  4  the proxy refused the API key (CONNECTOR_PROXY_API_KEY missing or wrong)"""


class CliError(click.ClickException):
    """A failure shown as ``Error: <error_code>: <message>``, then one line per detail.

    Args:
        message: what went wrong, for people.
        error_code: the proxy's stable code, when there is one.
        details: further lines, e.g. one per invalid parameter.
    """

    exit_code = COMMAND_FAILED

    def __init__(self, message: str, *, error_code: str | None = None, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.details = tuple(details)

    def show(self, file: IO[Any] | None = None) -> None:
        prefix = f"{self.error_code}: " if self.error_code else ""
        click.echo(f"Error: {prefix}{self.format_message()}", err=True, file=file)
        for line in self.details:
            click.echo(f"  {line}", err=True, file=file)


class CommandFailed(CliError):
    exit_code = COMMAND_FAILED


class RequestRefused(CliError):
    exit_code = REQUEST_REFUSED


class Unreachable(CliError):
    exit_code = UNREACHABLE


class Unauthorized(CliError):
    exit_code = UNAUTHORIZED


def answered(error_code: str, message: str, details: Sequence[str] = ()) -> CliError:
    """The error for an error the proxy (or a command) answered: refused or failed, by its code."""
    kind = RequestRefused if error_code in REFUSED_ERROR_CODES else CommandFailed
    return kind(message, error_code=error_code, details=details)


def key_refused(api_key: str | None) -> Unauthorized:
    """The error for the proxy's refusal of the API key (REST's 401, gRPC's UNAUTHENTICATED)."""
    if api_key:
        return Unauthorized("the proxy refused the API key in CONNECTOR_PROXY_API_KEY")
    return Unauthorized("the proxy needs its API key: set CONNECTOR_PROXY_API_KEY")
