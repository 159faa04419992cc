/**
 * The error vocabulary of the Python server (server/errors.py), for connectors written here:
 * a failure has a gRPC code, a stable error_code (what BPMN error events match) and a message
 * for people; invalid parameters also name each bad field.
 */

import { status as Status } from "@grpc/grpc-js";

import type { Violation } from "./rpc-status.js";

export type { Violation } from "./rpc-status.js";

/** ErrorInfo.domain of every failure, as server/errors.py's ERROR_DOMAIN. */
export const ERROR_DOMAIN = "spiff.connector";

/** The error_code of a failure that names none: the gRPC code in CamelCase (`DeadlineExceeded`),
 * as server/errors.py's default_error_code. */
export function defaultErrorCode(code: Status): string {
  const name = Status[code] ?? "UNKNOWN";
  return name
    .split("_")
    .map((part) => part.charAt(0) + part.slice(1).toLowerCase())
    .join("");
}

/** A command failure. `message` is shown to diagram authors: never put a secret in it. */
export class CommandError extends Error {
  readonly errorCode: string;

  constructor(
    readonly code: Status,
    message: string,
    errorCode?: string,
    readonly violations: readonly Violation[] = [],
  ) {
    super(message);
    this.name = "CommandError";
    this.errorCode = errorCode ?? defaultErrorCode(code);
  }
}

/** INVALID_ARGUMENT / InvalidParameters naming every bad parameter, worded like the Python
 * connectors: `Invalid parameters: bindings must be a JSON object.` */
export function invalidParameters(violations: readonly Violation[]): CommandError {
  const problems = violations.map((v) => `${v.field} ${v.description}`).join("; ");
  return new CommandError(Status.INVALID_ARGUMENT, `Invalid parameters: ${problems}.`, "InvalidParameters", violations);
}

/** INVALID_ARGUMENT / InvalidParameters for absent required parameters, worded like
 * server/invocation.py: `Missing required parameters: expression.` */
export function missingParameters(names: readonly string[]): CommandError {
  return new CommandError(
    Status.INVALID_ARGUMENT,
    `Missing required parameters: ${names.join(", ")}.`,
    "InvalidParameters",
    names.map((field) => ({ field, description: "is required" })),
  );
}

/** The failure of a call that ran out of time, worded as server/invocation.py's timeout_failure
 * (`timeoutSeconds` is the call's time, rounded to 0.1 s as the Python server does). */
export function deadlineExceeded(timeoutSeconds: number): CommandError {
  return new CommandError(Status.DEADLINE_EXCEEDED, `The command did not finish within ${formatSeconds(timeoutSeconds)} s.`);
}

/** Python's `{seconds:g}` for the values a deadline rounded to 0.1 s takes: 40, 0.5, 2.3. */
function formatSeconds(seconds: number): string {
  return String(Number(seconds.toPrecision(6)));
}
