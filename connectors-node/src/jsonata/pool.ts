/**
 * Worker threads that evaluate expressions, so that no expression can stall the server.
 *
 * Measured with jsonata 2.2 on Node.js 20 (connectors-node/README.md has the figures):
 * - JSONata's steps chain promises that never yield to the event loop, so an evaluation on the
 *   server thread would hold every other call (and health checks) until it ends;
 * - the step hooks cannot stop work done inside one built-in: `$sort([1..100000])` ran out of a
 *   4 GB heap and killed the process, a backtracking regular expression runs for minutes;
 * - a worker costs about 0.05 ms per call (postMessage both ways), against about 1 ms for the
 *   gRPC call itself.
 * So each evaluation runs in a worker with a heap limit (running out kills only the worker);
 * the server thread stops it at the time limit through the stop word (the guard in evaluate.ts
 * sees it at the next step) and, when the worker does not report back within a grace period
 * (it is inside one long built-in), terminates the worker and starts another.
 */

import { Worker } from "node:worker_threads";

import type { Job, Outcome, WorkerData, WorkerMessage } from "./protocol.js";

export interface PoolOptions {
  /** Worker threads, each evaluating one expression at a time. */
  readonly size: number;
  /** Each worker's old-generation heap, MiB. */
  readonly maxMemoryMb: number;
  /** How long a stopped worker may take to report back before it is terminated. */
  readonly stopGraceMs: number;
  /** The compiled worker.js. */
  readonly workerUrl: URL;
}

/** A job's parameters; the pool numbers it. */
export type Evaluation = Omit<Job, "id">;

interface Task {
  readonly job: Job;
  readonly timeLimitMs: number;
  readonly signal: AbortSignal;
  readonly resolve: (outcome: Outcome) => void;
  settled: boolean;
  startedAt: number;
  onAbort?: () => void;
}

interface Slot {
  worker: Worker;
  readonly stopWord: Int32Array;
  ready: boolean;
  /** The running task; it stays here after the pool answered for it (stopped) until the
   * worker reports back or is terminated. */
  task?: Task;
  stopTimer?: NodeJS.Timeout;
  killTimer?: NodeJS.Timeout;
  /** Why the worker died, from its 'error' event (e.g. ERR_WORKER_OUT_OF_MEMORY). */
  error?: Error & { code?: string };
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;

  constructor(private readonly options: PoolOptions) {}

  /** Starts the workers; resolves once each has loaded JSONata and evaluated a first expression. */
  async start(): Promise<void> {
    const ready: Promise<void>[] = [];
    for (let i = 0; i < this.options.size; i += 1) {
      const slot = this.spawn();
      this.slots.push(slot);
      ready.push(
        new Promise((resolve, reject) => {
          slot.worker.once("message", () => resolve());
          slot.worker.once("exit", (code) => reject(new Error(`a JSONata worker exited with code ${code} while starting`)));
        }),
      );
    }
    await Promise.all(ready);
  }

  /** Evaluates, stopping the evaluation after `timeLimitMs` (timeLimit) or when `signal` aborts
   * (aborted), whichever comes first. Never rejects. */
  run(evaluation: Evaluation, timeLimitMs: number, signal: AbortSignal): Promise<Outcome> {
    return new Promise((resolve) => {
      const task: Task = {
        job: { ...evaluation, id: this.nextId++ },
        timeLimitMs,
        signal,
        resolve,
        settled: false,
        startedAt: performance.now(),
      };
      if (this.closed || signal.aborted) {
        this.settle(task, { kind: "aborted", elapsedMs: 0, notes: [] });
        return;
      }
      task.onAbort = () => this.abort(task);
      signal.addEventListener("abort", task.onAbort, { once: true });
      this.queue.push(task);
      this.dispatch();
    });
  }

  /** Terminates every worker; queued evaluations end as aborted. */
  async close(): Promise<void> {
    this.closed = true;
    for (const task of this.queue.splice(0)) this.settle(task, { kind: "aborted", elapsedMs: 0, notes: [] });
    await Promise.all(
      this.slots.map(async (slot) => {
        clearTimeout(slot.stopTimer);
        clearTimeout(slot.killTimer);
        if (slot.task !== undefined) this.settle(slot.task, { kind: "aborted", elapsedMs: 0, notes: [] });
        await slot.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const stopWord = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    const slot: Slot = {
      worker: this.newWorker(stopWord),
      stopWord: new Int32Array(stopWord),
      ready: false,
    };
    this.watch(slot);
    return slot;
  }

  private newWorker(stopWord: SharedArrayBuffer): Worker {
    return new Worker(this.options.workerUrl, {
      workerData: { stopWord } satisfies WorkerData,
      resourceLimits: { maxOldGenerationSizeMb: this.options.maxMemoryMb },
    });
  }

  private watch(slot: Slot): void {
    const worker = slot.worker;
    worker.on("message", (message: WorkerMessage) => this.received(slot, message));
    worker.on("error", (error) => {
      slot.error = error;
    });
    worker.on("exit", () => {
      if (slot.worker === worker) this.replace(slot);
    });
  }

  private received(slot: Slot, message: WorkerMessage): void {
    if (message.type === "ready") {
      slot.ready = true;
      this.dispatch();
      return;
    }
    const task = slot.task;
    if (task === undefined || task.job.id !== message.id) return;
    const { outcome, elapsedMs, notes } = message;
    this.finish(slot);
    this.settle(task, outcome.kind === "stopped" ? { kind: "aborted", elapsedMs, notes } : { ...outcome, elapsedMs, notes });
    this.dispatch();
  }

  /** A worker died: its task (if any) ends as memoryLimit or workerFailed, and a new worker
   * takes the slot. */
  private replace(slot: Slot): void {
    const task = slot.task;
    const error = slot.error;
    const wasReady = slot.ready;
    this.finish(slot);
    slot.ready = false;
    slot.error = undefined;
    if (task !== undefined && !task.settled) {
      const elapsedMs = performance.now() - task.startedAt;
      if (error?.code === "ERR_WORKER_OUT_OF_MEMORY") {
        console.error("jsonata: a worker ran out of memory; starting another");
        this.settle(task, { kind: "memoryLimit", elapsedMs, notes: [] });
      } else {
        console.error("jsonata: a worker failed; starting another:", error ?? "it exited");
        this.settle(task, { kind: "workerFailed", message: String(error ?? "the worker exited"), elapsedMs, notes: [] });
      }
    }
    if (this.closed) return;
    const respawn = () => {
      if (this.closed) return;
      Atomics.store(slot.stopWord, 0, 0);
      slot.worker = this.newWorker(slot.stopWord.buffer as SharedArrayBuffer);
      this.watch(slot);
    };
    // A worker that dies before it is ready would die again at once: pause instead of spinning.
    if (wasReady) respawn();
    else setTimeout(respawn, 1000).unref();
  }

  /** Hands queued tasks to idle workers. */
  private dispatch(): void {
    for (const slot of this.slots) {
      if (!slot.ready || slot.task !== undefined) continue;
      const task = this.queue.shift();
      if (task === undefined) return;
      slot.task = task;
      task.startedAt = performance.now();
      slot.stopTimer = setTimeout(() => this.stop(slot, "timeLimit"), task.timeLimitMs);
      slot.worker.postMessage(task.job);
    }
  }

  private abort(task: Task): void {
    const queued = this.queue.indexOf(task);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      this.settle(task, { kind: "aborted", elapsedMs: 0, notes: [] });
      return;
    }
    const slot = this.slots.find((candidate) => candidate.task === task);
    if (slot !== undefined) this.stop(slot, "aborted");
  }

  /** Answers for the running task at once, asks the worker to stop, and terminates it when it
   * has not reported back within the grace period. */
  private stop(slot: Slot, kind: "timeLimit" | "aborted"): void {
    const task = slot.task;
    if (task === undefined || task.settled) return;
    clearTimeout(slot.stopTimer);
    Atomics.store(slot.stopWord, 0, task.job.id);
    this.settle(task, { kind, elapsedMs: performance.now() - task.startedAt, notes: [] });
    slot.killTimer = setTimeout(() => {
      if (slot.task !== task) return;
      const grace = this.options.stopGraceMs;
      console.error(`jsonata: a worker did not stop within ${grace} ms (a long built-in); starting another`);
      void slot.worker.terminate();
    }, this.options.stopGraceMs);
  }

  private finish(slot: Slot): void {
    clearTimeout(slot.stopTimer);
    clearTimeout(slot.killTimer);
    slot.task = undefined;
  }

  private settle(task: Task, outcome: Outcome): void {
    if (task.settled) return;
    task.settled = true;
    if (task.onAbort !== undefined) task.signal.removeEventListener("abort", task.onAbort);
    task.resolve(outcome);
  }
}
