"""PostgreSQL's errors as command errors: the psycopg class name as error_code, the gRPC code by SQLSTATE.

The error_code is the psycopg exception class name, as the old connector's was (``UndefinedTable``,
``UniqueViolation``, ``OperationalError``...); the gRPC code comes from the SQLSTATE (its class, or
the exact state where it says more) or, for failures without one, from what the client library
reported. The connector adds InvalidParameters and PoolTimeout. Messages are the server's
diagnostics, scrubbed of the connection string and its passwords.
"""

from __future__ import annotations

import psycopg

from connectors._sql.connections import Target
from server import errors

__all__ = ["command_error"]

_BY_SQLSTATE_CLASS: dict[str, type[errors.CommandError]] = {
    "08": errors.Unavailable,  # connection exception
    "0A": errors.Unimplemented,  # feature not supported
    "21": errors.InvalidArgument,  # cardinality violation
    "22": errors.InvalidArgument,  # data exception
    "23": errors.FailedPrecondition,  # integrity constraint violation
    "25": errors.FailedPrecondition,  # invalid transaction state
    "28": errors.Unauthenticated,  # invalid authorization specification
    "2B": errors.FailedPrecondition,  # dependent privilege descriptors still exist
    "2F": errors.FailedPrecondition,  # SQL routine exception
    "38": errors.FailedPrecondition,  # external routine exception
    "39": errors.FailedPrecondition,  # external routine invocation exception
    "3B": errors.FailedPrecondition,  # savepoint exception
    "3D": errors.NotFound,  # invalid catalog name
    "3F": errors.NotFound,  # invalid schema name
    "40": errors.Aborted,  # transaction rollback
    "42": errors.InvalidArgument,  # syntax error or access rule violation
    "44": errors.FailedPrecondition,  # WITH CHECK OPTION violation
    "53": errors.ResourceExhausted,  # insufficient resources
    "54": errors.InvalidArgument,  # program limit exceeded
    "55": errors.FailedPrecondition,  # object not in prerequisite state
    "57": errors.Unavailable,  # operator intervention
    "58": errors.Internal,  # system error
    "72": errors.Aborted,  # snapshot too old
    "P0": errors.FailedPrecondition,  # PL/pgSQL error (RAISE EXCEPTION)
    "XX": errors.Internal,  # internal error
}
_BY_SQLSTATE: dict[str, type[errors.CommandError]] = {
    "57014": errors.DeadlineExceeded,  # query_canceled: the statement timeout
    "23505": errors.AlreadyExists,  # unique_violation
    "42501": errors.PermissionDenied,  # insufficient_privilege
    "55P03": errors.Aborted,  # lock_not_available
}


def _error_class(exc: psycopg.Error) -> type[errors.CommandError]:
    """The gRPC code of a psycopg error: by SQLSTATE, else by what the client library reported."""
    state = exc.sqlstate
    if state is None:
        if isinstance(exc, psycopg.OperationalError):
            return _connection_failure_class(str(exc))
        if isinstance(exc, psycopg.ProgrammingError | psycopg.DataError | psycopg.NotSupportedError):
            return errors.InvalidArgument
        return errors.Unknown
    name = type(exc).__name__
    if state in _BY_SQLSTATE:
        return _BY_SQLSTATE[state]
    if name.startswith("Undefined"):
        return errors.NotFound
    if name.startswith("Duplicate"):
        return errors.AlreadyExists
    return _BY_SQLSTATE_CLASS.get(state[:2], errors.Unknown)


def _connection_failure_class(text: str) -> type[errors.CommandError]:
    """Connection failures carry no SQLSTATE: the server's (English) words tell the caller's mistakes."""
    if (
        "authentication failed" in text
        or "pg_hba.conf" in text
        or ("role" in text and "does not exist" in text)
    ):
        return errors.Unauthenticated
    if "database" in text and "does not exist" in text:
        return errors.NotFound
    return errors.Unavailable


def command_error(exc: psycopg.Error, target: Target) -> errors.CommandError:
    diagnostic = exc.diag
    if diagnostic.message_primary:
        parts = [diagnostic.message_primary]
        if diagnostic.message_detail:
            parts.append(diagnostic.message_detail)
        if diagnostic.message_hint:
            parts.append(f"Hint: {diagnostic.message_hint}")
        text = ". ".join(part.rstrip(".") for part in parts) + "."
    else:
        text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if name == "QueryCanceled":
        text += " (statement_timeout_ms, or the call's deadline)"
    return _error_class(exc)(target.scrub(text), error_code=name)
