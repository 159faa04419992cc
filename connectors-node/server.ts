/**
 * `node connectors-node/dist/server.js` (`make serve-node`): the Node.js connector server.
 *
 * Prints `listening on <host>:<port>` on stdout once it accepts calls (with the chosen port when
 * CONNECTOR_NODE_PORT is 0); everything else goes to stderr. SIGTERM or SIGINT: health turns
 * NOT_SERVING and its watches end, in-flight calls get CONNECTOR_PROXY_SHUTDOWN_GRACE seconds,
 * then the rest are cancelled; a second signal ends at once.
 */

import { fileURLToPath } from "node:url";

import type * as grpc from "@grpc/grpc-js";

import type { Connector } from "./src/command.js";
import { conformanceConnector } from "./src/conformance.js";
import { address, startServer, type RunningServer } from "./src/grpc-server.js";
import { jsonataConnector } from "./src/jsonata/connector.js";
import { WorkerPool } from "./src/jsonata/pool.js";
import { serverCredentials } from "./src/security.js";
import { SettingsError, settingsFromEnv, type Settings } from "./src/settings.js";

/** dist/server.js → gen/ at the package root, written by the build with the generated code. */
const DESCRIPTOR_SETS = [fileURLToPath(new URL("../gen/descriptors.binpb", import.meta.url))];
/** A stopped evaluation normally ends at its next step; one stuck in a long built-in is
 * terminated after this long. */
const STOP_GRACE_MS = 100;

/** What the server hosts, and what to close after it stopped. */
async function connectors(settings: Settings): Promise<{ connectors: Connector[]; close: () => Promise<void> }> {
  if (settings.conformance) return { connectors: [conformanceConnector()], close: async () => undefined };
  const pool = new WorkerPool({
    size: settings.jsonata.workers,
    maxMemoryMb: settings.jsonata.maxMemoryMb,
    stopGraceMs: STOP_GRACE_MS,
    workerUrl: new URL("./src/jsonata/worker.js", import.meta.url),
  });
  await pool.start();
  return { connectors: [jsonataConnector(pool, settings.jsonata)], close: () => pool.close() };
}

async function main(): Promise<void> {
  let settings: Settings;
  let credentials: grpc.ServerCredentials;
  try {
    settings = settingsFromEnv(process.env);
    credentials = serverCredentials(settings.tls);
  } catch (error) {
    if (!(error instanceof SettingsError)) throw error;
    console.error(`connector server: ${error.message}`);
    process.exitCode = 2;
    return;
  }
  const hosted = await connectors(settings);
  let running: RunningServer;
  try {
    running = await startServer(settings, credentials, hosted.connectors, DESCRIPTOR_SETS);
  } catch (error) {
    await hosted.close();
    throw error;
  }
  const shutdown = stopper(running, hosted.close, settings.shutdownGraceMs);
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  const where = address(settings.host, running.port);
  console.log(`listening on ${where}`);
  console.error(`connector server: ${running.services.join(", ")} on ${where}; ${security(settings)}`);
}

/** How callers get in, for the start-up line (never the key itself). */
function security(settings: Settings): string {
  const tls =
    settings.tls === undefined
      ? "TLS off"
      : settings.tls.clientCaFile === undefined
        ? "TLS on"
        : "TLS on, client certificates required";
  const key = settings.apiKey === undefined ? "no API key" : "API key required (health open)";
  return `${tls}, ${key}`;
}

/** The signal handler: health turns NOT_SERVING and its watches end, new calls are refused, the
 * calls in flight get `graceMs` to finish, then the rest are cancelled and the connectors closed. */
function stopper(running: RunningServer, close: () => Promise<void>, graceMs: number): () => void {
  let stopping = false;
  return () => {
    if (stopping) {
      running.server.forceShutdown();
      process.exit(1);
    }
    stopping = true;
    running.health.stop();
    const force = setTimeout(() => running.server.forceShutdown(), graceMs);
    running.server.tryShutdown(() => {
      clearTimeout(force);
      void close().then(() => console.error("connector server: stopped"));
    });
  };
}

await main();
