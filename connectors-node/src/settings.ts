/**
 * Settings from environment variables, checked at start-up (a bad value stops the server with a
 * message naming it, rather than misbehaving later). The connector's own settings are the ones
 * jsonata.proto declares; CONNECTOR_PROXY_SHUTDOWN_GRACE and CONNECTOR_PROXY_MAX_BODY_BYTES mean
 * what they mean for the Python server.
 */

import { availableParallelism } from "node:os";

export interface Settings {
  /** CONNECTOR_NODE_HOST: the interface to listen on. */
  readonly host: string;
  /** CONNECTOR_NODE_PORT: 0 picks a free port (printed on stdout). */
  readonly port: number;
  /** CONNECTOR_PROXY_SHUTDOWN_GRACE, in ms: how long in-flight calls get on SIGTERM. */
  readonly shutdownGraceMs: number;
  /** Twice CONNECTOR_PROXY_MAX_BODY_BYTES, as the Python server's gRPC message limit. */
  readonly maxMessageBytes: number;
  /** CONNECTOR_NODE_CONFORMANCE=1: serve the test-only ConformanceService instead of the
   * connectors (tests/federation/test_conformance.py). */
  readonly conformance: boolean;
  readonly jsonata: JsonataSettings;
}

export interface JsonataSettings {
  /** CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS */
  readonly timeLimitMs: number;
  /** CONNECTOR_PROXY_JSONATA_MAX_DEPTH */
  readonly maxDepth: number;
  /** CONNECTOR_PROXY_JSONATA_WORKERS */
  readonly workers: number;
  /** CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB */
  readonly maxMemoryMb: number;
}

export class SettingsError extends Error {}

type Env = Readonly<Record<string, string | undefined>>;

/** The settings in `env`.
 * @throws SettingsError naming the first bad variable. */
export function settingsFromEnv(env: Env): Settings {
  const integer = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const text = env[name]?.trim();
    if (text === undefined || text === "") return fallback;
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) {
      throw new SettingsError(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(text)}`);
    }
    return value;
  };
  const seconds = (name: string, fallback: number): number => {
    const text = env[name]?.trim();
    if (text === undefined || text === "") return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0) {
      throw new SettingsError(`${name} must be a number of seconds, 0 or more, not ${JSON.stringify(text)}`);
    }
    return value;
  };
  return {
    host: env["CONNECTOR_NODE_HOST"]?.trim() || "127.0.0.1",
    port: integer("CONNECTOR_NODE_PORT", 50052, 0, 65535),
    shutdownGraceMs: seconds("CONNECTOR_PROXY_SHUTDOWN_GRACE", 30) * 1000,
    maxMessageBytes: 2 * integer("CONNECTOR_PROXY_MAX_BODY_BYTES", 32 * 1024 * 1024, 1, 2 ** 30 - 1),
    conformance: integer("CONNECTOR_NODE_CONFORMANCE", 0, 0, 1) === 1,
    jsonata: {
      timeLimitMs: integer("CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS", 1000, 1, 2 ** 31 - 1),
      maxDepth: integer("CONNECTOR_PROXY_JSONATA_MAX_DEPTH", 500, 1),
      workers: integer("CONNECTOR_PROXY_JSONATA_WORKERS", availableParallelism(), 1, 1024),
      maxMemoryMb: integer("CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB", 512, 16),
    },
  };
}
