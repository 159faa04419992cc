"""MySQL's errors as command errors, with postgres_v2's error_code where the meaning is the same.

A diagram can move between the two connectors: the error number picks the error_code postgres_v2
gives for the same failure (UndefinedTable, UniqueViolation, QueryCanceled, OperationalError...)
and the gRPC code; other errors keep PyMySQL's class name, with the gRPC code of the class (client
errors, 2000-2999, are Unavailable). Messages are the server's, scrubbed of the connection string
and its password.
"""

from __future__ import annotations

import pymysql  # type: ignore[import-untyped]

from connectors._sql.connections import Target
from server import errors

__all__ = ["command_error", "error_code"]

# MySQL error numbers with the postgres_v2 error_code of the same meaning, and their gRPC code.
_BY_ERRNO: dict[int, tuple[str, type[errors.CommandError]]] = {
    1040: ("OperationalError", errors.ResourceExhausted),  # too many connections
    1044: ("OperationalError", errors.PermissionDenied),  # access denied to the database
    1045: ("OperationalError", errors.Unauthenticated),  # access denied: user or password
    1049: ("OperationalError", errors.NotFound),  # unknown database
    1048: ("NotNullViolation", errors.FailedPrecondition),
    1364: ("NotNullViolation", errors.FailedPrecondition),  # no value and no default
    1050: ("DuplicateTable", errors.AlreadyExists),
    1060: ("DuplicateColumn", errors.AlreadyExists),
    1062: ("UniqueViolation", errors.AlreadyExists),
    1586: ("UniqueViolation", errors.AlreadyExists),
    1051: ("UndefinedTable", errors.NotFound),
    1146: ("UndefinedTable", errors.NotFound),
    1054: ("UndefinedColumn", errors.NotFound),
    1305: ("UndefinedFunction", errors.NotFound),
    1630: ("UndefinedFunction", errors.NotFound),
    1064: ("SyntaxError", errors.InvalidArgument),
    1142: ("InsufficientPrivilege", errors.PermissionDenied),
    1143: ("InsufficientPrivilege", errors.PermissionDenied),
    1227: ("InsufficientPrivilege", errors.PermissionDenied),
    1213: ("DeadlockDetected", errors.Aborted),
    1205: ("LockNotAvailable", errors.Aborted),
    1216: ("ForeignKeyViolation", errors.FailedPrecondition),
    1217: ("ForeignKeyViolation", errors.FailedPrecondition),
    1451: ("ForeignKeyViolation", errors.FailedPrecondition),
    1452: ("ForeignKeyViolation", errors.FailedPrecondition),
    3819: ("CheckViolation", errors.FailedPrecondition),
    4025: ("CheckViolation", errors.FailedPrecondition),
    1644: ("RaiseException", errors.FailedPrecondition),  # SIGNAL
    1317: ("QueryCanceled", errors.DeadlineExceeded),
    1969: ("QueryCanceled", errors.DeadlineExceeded),  # MariaDB max_statement_time
    3024: ("QueryCanceled", errors.DeadlineExceeded),  # MySQL max_execution_time
    1365: ("DivisionByZero", errors.InvalidArgument),
    1264: ("NumericValueOutOfRange", errors.InvalidArgument),
    1406: ("StringDataRightTruncation", errors.InvalidArgument),
    1292: ("InvalidTextRepresentation", errors.InvalidArgument),
    1366: ("InvalidTextRepresentation", errors.InvalidArgument),
}
_BY_CLASS: tuple[tuple[type[pymysql.err.Error], type[errors.CommandError]], ...] = (
    (pymysql.err.ProgrammingError, errors.InvalidArgument),
    (pymysql.err.DataError, errors.InvalidArgument),
    (pymysql.err.IntegrityError, errors.FailedPrecondition),
    (pymysql.err.NotSupportedError, errors.Unimplemented),
    (pymysql.err.InternalError, errors.Internal),
)


def _errno(exc: pymysql.err.Error) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def error_code(exc: pymysql.err.Error) -> str:
    known = _BY_ERRNO.get(_errno(exc) or 0)
    return known[0] if known else type(exc).__name__


def _error_class(exc: pymysql.err.Error) -> type[errors.CommandError]:
    errno = _errno(exc) or 0
    if errno in _BY_ERRNO:
        return _BY_ERRNO[errno][1]
    if 2000 <= errno < 3000:  # client errors: the server could not be reached or went away
        return errors.Unavailable
    return next((cls for kind, cls in _BY_CLASS if isinstance(exc, kind)), errors.Unknown)


def command_error(exc: pymysql.err.Error, target: Target) -> errors.CommandError:
    errno = _errno(exc)
    if errno is not None and len(exc.args) > 1:
        text = f"{exc.args[1]} (MySQL error {errno})"
    else:
        text = str(exc) or type(exc).__name__
    return _error_class(exc)(target.scrub(text), error_code=error_code(exc))
