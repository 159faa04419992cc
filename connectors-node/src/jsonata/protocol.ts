/**
 * The messages between the server's thread and the evaluation worker threads.
 *
 * Only strings and numbers cross: the worker parses the JSON text itself and sends the result
 * back as JSON text, so the server thread never parses (or blocks on) a large document.
 */

import type { Violation } from "../rpc-status.js";

/** One evaluation. */
export interface Job {
  /** Unique per pool; the worker stops the job when the stop word holds this id. */
  readonly id: number;
  readonly expression: string;
  /** JSON text; undefined when the parameter is absent. */
  readonly input: string | undefined;
  /** JSON text of an object; undefined when the parameter is absent. */
  readonly bindings: string | undefined;
  readonly maxDepth: number;
}

/** What the worker reports for a job. */
export type WorkerOutcome =
  /** The value of the expression as JSON text (`null` when it yielded nothing). */
  | { readonly kind: "result"; readonly json: string }
  | { readonly kind: "invalidParameters"; readonly violations: readonly Violation[] }
  | { readonly kind: "syntaxError"; readonly error: JsonataErrorInfo }
  | { readonly kind: "evaluationError"; readonly error: JsonataErrorInfo }
  /** The result holds a function (a lambda, a built-in, a regular expression). */
  | { readonly kind: "resultNotJson"; readonly what: string }
  | { readonly kind: "depthLimit"; readonly position: number | undefined }
  /** The job saw its id in the stop word and gave up; the server has already answered. */
  | { readonly kind: "stopped" };

/** A JSONata error as the library throws it: {code, position, token, message}. */
export interface JsonataErrorInfo {
  readonly code: string;
  readonly position: number | undefined;
  readonly message: string;
}

/** Worker → server. */
export type WorkerMessage =
  | { readonly type: "ready" }
  | {
      readonly type: "done";
      readonly id: number;
      readonly outcome: WorkerOutcome;
      /** Milliseconds the evaluation took, measured in the worker. */
      readonly elapsedMs: number;
      /** Lines for spiff__logs, e.g. about numbers that lost precision. */
      readonly notes: readonly string[];
    };

/** What the server gets for a job: the worker's outcome, or the pool's own verdict. */
export type Outcome =
  | (WorkerOutcome & { readonly elapsedMs: number; readonly notes: readonly string[] })
  /** Stopped by the pool at the time limit, or on the caller's signal (deadline, cancellation). */
  | { readonly kind: "timeLimit"; readonly elapsedMs: number; readonly notes: readonly string[] }
  | { readonly kind: "aborted"; readonly elapsedMs: number; readonly notes: readonly string[] }
  /** The worker ran out of heap (its resourceLimits); it is replaced. */
  | { readonly kind: "memoryLimit"; readonly elapsedMs: number; readonly notes: readonly string[] }
  /** The worker died for another reason; it is replaced. */
  | {
      readonly kind: "workerFailed";
      readonly message: string;
      readonly elapsedMs: number;
      readonly notes: readonly string[];
    };

/** workerData of each worker thread. */
export interface WorkerData {
  /** A SharedArrayBuffer of one Int32: the id of the job to stop (0: none). */
  readonly stopWord: SharedArrayBuffer;
}
