/**
 * Serving a connector's commands over grpc-js the way the Python server does (server/app.py and
 * server/invocation.py), so the proxy cannot tell the two apart:
 *
 * - required parameters are checked first (InvalidParameters with a BadRequest);
 * - a failure is the gRPC status plus `grpc-status-details-bin`, a google.rpc.Status with an
 *   ErrorInfo (reason = error_code, domain spiff.connector) and a BadRequest for bad parameters;
 * - the command's log lines travel as `spiff-log-bin` trailers, one per line, on success and on
 *   failure;
 * - the server answers DeadlineExceeded itself just before the caller's deadline (the call's time
 *   rounded to 0.1 s, minus 50 ms), logs included, instead of letting the call die without them.
 *
 * Messages are protobuf-es generated types; grpc-js only sees their bytes.
 */

import { fromBinary, toBinary, type DescMessage, type DescMethod, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";

import { CommandError, ERROR_DOMAIN, deadlineExceeded, missingParameters } from "./errors.js";
import { missingFields, requiredFields } from "./parameters.js";
import { encodeStatus } from "./rpc-status.js";

export const LOG_METADATA_KEY = "spiff-log-bin";
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
/** Room for the answer to reach the caller before its deadline (server/app.py's DEADLINE_MARGIN). */
const DEADLINE_MARGIN_MS = 50;

/** What a command sees of its call. */
export interface CommandContext {
  /** Aborted when the server gives up on the call: its deadline is near, or the caller cancelled. */
  readonly signal: AbortSignal;
  /** When (epoch ms) the server answers DeadlineExceeded; Infinity when the call has no deadline. */
  readonly deadline: number;
  /** Adds a line to the call's spiff__logs. Never pass a secret. */
  log(line: string): void;
}

/** One command: a request in, a response out, or a thrown CommandError. */
export type Command<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: CommandContext,
) => Promise<MessageShape<O>>;

/** An implementation of every rpc of a service, by the rpc's local name (`evaluate`). */
export type Commands<S extends GenServiceMethods> = {
  [K in keyof S]: Command<S[K]["input"], S[K]["output"]>;
};

type Outcome<O extends DescMessage> =
  | { readonly response: MessageShape<O>; readonly error?: undefined }
  | { readonly error: CommandError };

/** A connector the server hosts: its service and how to add it to a grpc-js server. */
export interface Connector {
  /** The service's full name, e.g. spiff.connector.jsonata.v1.JsonataService. */
  readonly service: string;
  register(server: grpc.Server): void;
}

/** The connector serving `commands` as `service`. */
export function connector<S extends GenServiceMethods>(service: GenService<S>, commands: Commands<S>): Connector {
  return { service: service.typeName, register: (server) => addConnector(server, service, commands) };
}

/** Registers a connector's service on `server`. Every rpc must be unary: connectors are
 * request/response commands. */
function addConnector<S extends GenServiceMethods>(
  server: grpc.Server,
  service: GenService<S>,
  commands: Commands<S>,
): void {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary") {
      throw new Error(`${service.typeName}/${method.name} is not unary; connectors serve unary commands only`);
    }
    const command = commands[method.localName as keyof S] as Command<DescMessage, DescMessage>;
    definition[method.name] = methodDefinition(service.typeName, method);
    handlers[method.name] = unaryHandler(method, command);
  }
  server.addService(definition, handlers);
}

function methodDefinition(serviceName: string, method: DescMethod): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/${serviceName}/${method.name}`,
    requestStream: false,
    responseStream: false,
    originalName: method.localName,
    requestSerialize: (value) => asBuffer(toBinary(method.input, value as MessageShape<DescMessage>)),
    requestDeserialize: (bytes) => fromBinary(method.input, bytes),
    responseSerialize: (value) => asBuffer(toBinary(method.output, value as MessageShape<DescMessage>)),
    responseDeserialize: (bytes) => fromBinary(method.output, bytes),
  };
}

function unaryHandler(
  method: DescMethod,
  command: Command<DescMessage, DescMessage>,
): grpc.handleUnaryCall<MessageShape<DescMessage>, MessageShape<DescMessage>> {
  const required = requiredFields(method.input);
  const name = `${method.parent.typeName}/${method.name}`;
  return (call, callback) => {
    const lines: string[] = [];
    const controller = new AbortController();
    const onCancelled = () => controller.abort(new Error("the caller cancelled the call"));
    call.once("cancelled", onCancelled);

    let timer: NodeJS.Timeout | undefined;
    const outcomes: Promise<Outcome<DescMessage>>[] = [];
    let deadline = Infinity;
    const callDeadline = deadlineMs(call.getDeadline());
    if (Number.isFinite(callDeadline)) {
      // As server/app.py: the call's time rounded to 0.1 s (the number the message gives), less
      // the margin; the command is told to stop, and the answer goes out at once.
      const seconds = Math.max(0, Math.round((callDeadline - Date.now()) / 100) / 10);
      const budget = Math.max(0, seconds * 1000 - DEADLINE_MARGIN_MS);
      deadline = Date.now() + budget;
      outcomes.push(
        new Promise((resolve) => {
          timer = setTimeout(() => {
            controller.abort(new Error("the call's deadline is near"));
            resolve({ error: deadlineExceeded(seconds) });
          }, budget);
        }),
      );
    }
    const context: CommandContext = { signal: controller.signal, deadline, log: (line) => lines.push(line) };
    outcomes.push(execute(name, command, call.request, required, context));

    void Promise.race(outcomes).then((outcome) => {
      clearTimeout(timer);
      call.removeListener("cancelled", onCancelled);
      if (call.cancelled) return; // grpc-js has already ended the call
      const trailer = new grpc.Metadata();
      if (outcome.error === undefined) {
        addLogs(trailer, lines);
        callback(null, outcome.response, trailer);
        return;
      }
      const { error } = outcome;
      const status = encodeStatus({
        code: error.code,
        message: error.message,
        reason: error.errorCode,
        domain: ERROR_DOMAIN,
        violations: error.violations,
      });
      trailer.add(STATUS_DETAILS_KEY, asBuffer(status));
      addLogs(trailer, lines);
      callback({ code: error.code, details: error.message, metadata: trailer });
    });
  };
}

/** Checks the required parameters, runs the command, and turns whatever it throws into a failure:
 * a CommandError as it is, anything else into INTERNAL with a generic message (the details go to
 * this server's log, never to the caller). */
async function execute(
  name: string,
  command: Command<DescMessage, DescMessage>,
  request: MessageShape<DescMessage>,
  required: ReturnType<typeof requiredFields>,
  context: CommandContext,
): Promise<Outcome<DescMessage>> {
  try {
    const missing = missingFields(request, required);
    if (missing.length > 0) throw missingParameters(missing);
    return { response: await command(request, context) };
  } catch (error) {
    if (error instanceof CommandError) return { error };
    console.error(`command ${name} failed unexpectedly:`, error);
    return {
      error: new CommandError(
        grpc.status.INTERNAL,
        "The command failed unexpectedly; the connector server's log has the details.",
      ),
    };
  }
}

/** The same bytes as a Buffer (no copy), which grpc-js wants. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function addLogs(metadata: grpc.Metadata, lines: readonly string[]): void {
  for (const line of lines) metadata.add(LOG_METADATA_KEY, Buffer.from(line, "utf8"));
}

/** grpc-js gives a deadline as a Date or epoch milliseconds (Infinity: none). */
function deadlineMs(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}
