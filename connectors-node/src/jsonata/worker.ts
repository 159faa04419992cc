/**
 * A worker thread evaluating expressions, one at a time, for the pool (pool.ts).
 *
 * The stop word is shared memory the server thread writes a job's id into to stop it: the
 * guard reads it at every evaluation step, so a stop needs no message (the worker's event loop
 * is busy while JSONata runs: its steps chain promises, which never yield to the loop).
 */

import { parentPort, workerData } from "node:worker_threads";

import jsonata from "jsonata";

import { evaluateJob } from "./evaluate.js";
import type { Job, WorkerData, WorkerMessage } from "./protocol.js";

const port = parentPort;
if (port === null) throw new Error("worker.js runs as a worker thread of the pool");
const stopWord = new Int32Array((workerData as WorkerData).stopWord);

port.on("message", (job: Job) => {
  const started = performance.now();
  void evaluateJob(job, () => Atomics.load(stopWord, 0) === job.id).then(({ outcome, notes }) => {
    const message: WorkerMessage = { type: "done", id: job.id, outcome, elapsedMs: performance.now() - started, notes };
    port.postMessage(message);
  });
});

// One evaluation before taking jobs, so the first call does not pay for compiling JSONata's code.
await jsonata('$string($sum([1, 2]) * 2) & "x"').evaluate({});
port.postMessage({ type: "ready" } satisfies WorkerMessage);
