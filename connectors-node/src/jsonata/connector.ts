/**
 * jsonata/Evaluate: the JsonataService of protos/spiff/connector/jsonata/v1/jsonata.proto.
 * The evaluation runs in the worker pool; this module turns its outcome into the response or
 * into the failure the proto documents.
 */

import { create } from "@bufbuild/protobuf";
import { status as Status } from "@grpc/grpc-js";

import {
  EvaluateResponseSchema,
  JsonataService,
  type EvaluateResponse,
} from "../../gen/spiff/connector/jsonata/v1/jsonata_pb.js";
import type { JsonValue } from "../../gen/spiff/connector/v1/types_pb.js";
import { connector, type CommandContext, type Connector } from "../command.js";
import { CommandError, invalidParameters } from "../errors.js";
import type { JsonataSettings } from "../settings.js";
import type { WorkerPool } from "./pool.js";
import type { JsonataErrorInfo, Outcome } from "./protocol.js";

/** JsonataService, evaluating in `pool`. */
export function jsonataConnector(pool: WorkerPool, settings: JsonataSettings): Connector {
  return connector(JsonataService, {
    evaluate: async (request, context) => {
      const outcome = await pool.run(
        {
          expression: request.expression,
          input: jsonText(request.input),
          bindings: jsonText(request.bindings),
          maxDepth: settings.maxDepth,
        },
        settings.timeLimitMs,
        context.signal,
      );
      for (const note of outcome.notes) context.log(note);
      return respond(outcome, settings, context);
    },
  });
}

/** A JsonValue's text; an unset one (empty text) is an absent parameter, as in server/json_values.py. */
function jsonText(value: JsonValue | undefined): string | undefined {
  return value === undefined || value.json === "" ? undefined : value.json;
}

function respond(outcome: Outcome, settings: JsonataSettings, context: CommandContext): EvaluateResponse {
  const took = `${formatMs(outcome.elapsedMs)} ms`;
  switch (outcome.kind) {
    case "result":
      context.log(`Evaluated the expression in ${took}.`);
      return create(EvaluateResponseSchema, { result: { json: outcome.json } });
    case "invalidParameters":
      throw invalidParameters(outcome.violations);
    case "syntaxError":
      throw new CommandError(
        Status.INVALID_ARGUMENT,
        `The expression does not parse: ${describe(outcome.error)}`,
        "JsonataSyntaxError",
      );
    case "evaluationError":
      context.log(`The evaluation failed after ${took}.`);
      throw new CommandError(
        Status.INVALID_ARGUMENT,
        `The expression failed: ${describe(outcome.error)}`,
        "JsonataEvaluationError",
      );
    case "resultNotJson":
      context.log(`Evaluated the expression in ${took}, to a result JSON cannot hold.`);
      throw new CommandError(
        Status.INVALID_ARGUMENT,
        `${outcome.what}, which JSON cannot represent.`,
        "JsonataResultNotJson",
      );
    case "depthLimit": {
      context.log(`Stopped the evaluation after ${took}: its steps nested deeper than ${settings.maxDepth}.`);
      const where = outcome.position === undefined ? "" : ` (at position ${outcome.position})`;
      throw new CommandError(
        Status.INVALID_ARGUMENT,
        `The expression nested deeper than ${settings.maxDepth} evaluation steps${where}, ` +
          "the limit CONNECTOR_PROXY_JSONATA_MAX_DEPTH sets: probably a recursive function that never ends.",
        "JsonataDepthLimit",
      );
    }
    case "timeLimit":
      context.log(`Stopped the evaluation after ${took}.`);
      throw new CommandError(
        Status.DEADLINE_EXCEEDED,
        `The expression ran longer than ${settings.timeLimitMs} ms, the limit CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS sets: ` +
          "probably an endless loop or recursion.",
        "JsonataTimeLimit",
      );
    case "memoryLimit":
      context.log(`Stopped the evaluation after ${took}: its worker thread ran out of memory and was replaced.`);
      throw new CommandError(
        Status.RESOURCE_EXHAUSTED,
        `The evaluation needed more than ${settings.maxMemoryMb} MiB of memory, ` +
          "the limit CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB sets.",
        "JsonataMemoryLimit",
      );
    case "aborted":
    case "stopped":
      // The call's deadline came or the caller went away: the answer has already gone out.
      throw new CommandError(Status.CANCELLED, "The evaluation was stopped.");
    case "workerFailed":
      throw new Error(`a JSONata worker failed: ${outcome.message}`);
  }
}

/** `T2001 at position 5: The left side of the "+" operator must evaluate to a number.` */
function describe(error: JsonataErrorInfo): string {
  const where = error.position === undefined ? "" : ` at position ${error.position}`;
  const head = error.code === "" ? "" : `${error.code}${where}: `;
  const text = `${head}${error.message}`;
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** 0.42, 3.1, 1002 */
function formatMs(ms: number): string {
  if (ms < 1) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}
