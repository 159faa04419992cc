/**
 * One evaluation, as a worker thread runs it: parse the parameters, compile the expression,
 * evaluate it under a depth limit and a stop signal, and serialize the result.
 */

import jsonata from "jsonata";

import type { Violation } from "../rpc-status.js";
import { parseJson, serializeResult } from "./json.js";
import type { Job, JsonataErrorInfo, WorkerOutcome } from "./protocol.js";

/** JSONata calls these around every evaluation step, when they are bound in the expression's
 * environment (the hooks the JSONata exerciser's timeboxExpression uses; in jsonata 2.x they are
 * looked up by these symbols, not by the names `__evaluate_entry`/`__evaluate_exit`). */
const ENTRY = Symbol.for("jsonata.__evaluate_entry");
const EXIT = Symbol.for("jsonata.__evaluate_exit");

/** The parts of a JSONata environment frame the guard reads. */
interface Frame {
  /** Set by JSONata on the frame of the second and later items that array constructors and
   * group-by objects evaluate concurrently. */
  readonly isParallelCall?: boolean;
}

class LimitReached extends Error {}

/**
 * Stops a runaway evaluation at the next step: when the server asks (the time limit, the call's
 * deadline or a cancellation, read from shared memory) or when steps nest deeper than maxDepth.
 *
 * Why not JSONata 2.2's own `stack` option: it counts every step in progress, and the items of
 * an array constructor or a group-by object (`${ id: $ }` over 5,000 records) are in progress
 * at once, so ordinary expressions over large data fail as if they recursed. Like the
 * exerciser, the guard does not count the concurrent items; unlike it, it pairs each exit with
 * its own entry (JSONata may flag a frame as parallel between the two, which made the
 * exerciser's count drift upwards over long evaluations), and it checks the stop signal on
 * every step, parallel or not. A recursion inside such a concurrent item is not counted: the
 * time limit and the worker's memory limit stop it.
 */
class Guard {
  private depth = 0;
  /** frame → step (AST node) → how many of its entries were counted */
  private readonly counted = new WeakMap<object, Map<object, number>>();
  tripped: "depth" | "stop" | undefined;
  position: number | undefined;

  constructor(
    private readonly maxDepth: number,
    private readonly shouldStop: () => boolean,
  ) {}

  install(expression: jsonata.Expression): void {
    // assign() binds any key; the typings only admit strings.
    const assign = expression.assign.bind(expression) as unknown as (name: symbol, value: unknown) => void;
    assign(ENTRY, (step: { position?: number }, _input: unknown, frame: Frame) => this.enter(step, frame));
    assign(EXIT, (step: object, _input: unknown, frame: Frame) => this.exit(step, frame));
  }

  private enter(step: { position?: number }, frame: Frame): void {
    this.check();
    if (frame.isParallelCall) return;
    this.depth += 1;
    let steps = this.counted.get(frame);
    if (steps === undefined) {
      steps = new Map();
      this.counted.set(frame, steps);
    }
    steps.set(step, (steps.get(step) ?? 0) + 1);
    if (this.depth > this.maxDepth) {
      this.tripped = "depth";
      this.position = step.position;
      throw new LimitReached("depth limit");
    }
  }

  private exit(step: object, frame: Frame): void {
    const steps = this.counted.get(frame);
    const entries = steps?.get(step);
    if (steps !== undefined && entries !== undefined) {
      this.depth -= 1;
      if (entries === 1) steps.delete(step);
      else steps.set(step, entries - 1);
    }
    this.check();
  }

  /** Once tripped, every later step fails too: a function such as $eval wraps the errors of
   * what it evaluates, and must not carry on. */
  private check(): void {
    if (this.tripped === undefined && this.shouldStop()) this.tripped = "stop";
    if (this.tripped !== undefined) throw new LimitReached(this.tripped);
  }
}

/** The evaluation's outcome and its lines for spiff__logs. */
export interface Evaluated {
  readonly outcome: WorkerOutcome;
  readonly notes: string[];
}

/** Runs one job. `shouldStop` is polled at every evaluation step. */
export async function evaluateJob(job: Job, shouldStop: () => boolean): Promise<Evaluated> {
  const notes: string[] = [];
  const violations: Violation[] = [];
  const input = job.input === undefined ? undefined : parseParameter("input", job.input, violations, notes);
  let bindings: Record<string, unknown> | undefined;
  if (job.bindings !== undefined) {
    const value = parseParameter("bindings", job.bindings, violations, notes);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      bindings = value as Record<string, unknown>;
    } else if (value !== null && value !== INVALID) {
      violations.push({ field: "bindings", description: "must be a JSON object" });
    } // null: no bindings, as an absent parameter
  }
  if (violations.length > 0) return { outcome: { kind: "invalidParameters", violations }, notes };

  let expression: jsonata.Expression;
  try {
    expression = jsonata(job.expression);
  } catch (error) {
    return { outcome: { kind: "syntaxError", error: errorInfo(error) }, notes };
  }
  const guard = new Guard(job.maxDepth, shouldStop);
  guard.install(expression);
  let value: unknown;
  try {
    value = await expression.evaluate(input, bindings);
  } catch (error) {
    if (guard.tripped === "stop") return { outcome: { kind: "stopped" }, notes };
    if (guard.tripped === "depth") return { outcome: { kind: "depthLimit", position: guard.position }, notes };
    return { outcome: { kind: "evaluationError", error: errorInfo(error) }, notes };
  }
  const serialized = serializeResult(value);
  const outcome: WorkerOutcome = serialized.ok
    ? { kind: "result", json: serialized.json }
    : { kind: "resultNotJson", what: serialized.what };
  return { outcome, notes };
}

const INVALID = Symbol("invalid JSON");

function parseParameter(name: string, text: string, violations: Violation[], notes: string[]): unknown {
  const parsed = parseJson(text);
  if (!parsed.ok) {
    violations.push({ field: name, description: "is not valid JSON" });
    return INVALID;
  }
  if (parsed.inexactIntegers > 0) {
    const count = parsed.inexactIntegers === 1 ? "1 integer" : `${parsed.inexactIntegers} integers`;
    notes.push(
      `${name} holds ${count} beyond ±2^53, which JSONata (64-bit floating point numbers) holds only approximately.`,
    );
  }
  return parsed.value;
}

/** The fields of what JSONata threw: its errors are objects {code, position, token, message};
 * anything else (a RangeError...) keeps its message. */
function errorInfo(error: unknown): JsonataErrorInfo {
  const fields = (typeof error === "object" && error !== null ? error : {}) as {
    code?: unknown;
    position?: unknown;
    message?: unknown;
  };
  return {
    code: typeof fields.code === "string" ? fields.code : "",
    position: typeof fields.position === "number" ? fields.position : undefined,
    message: typeof fields.message === "string" ? fields.message : String(error),
  };
}
