/**
 * Settings from environment variables, checked at start-up (a bad value stops the server with a
 * message naming it, rather than misbehaving later). The connector's own settings are the ones
 * jsonata.proto declares; CONNECTOR_PROXY_SHUTDOWN_GRACE, CONNECTOR_PROXY_MAX_BODY_BYTES,
 * CONNECTOR_PROXY_API_KEY and CONNECTOR_PROXY_GRPC_TLS_* mean what they mean for the Python server
 * (server/settings.py), with the same rules.
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
  /** CONNECTOR_PROXY_API_KEY: every call but health needs it as the metadata
   * spiff-connector-proxy-api-key (security.ts). Never logged. */
  readonly apiKey: string | undefined;
  /** CONNECTOR_PROXY_GRPC_TLS_*: TLS on the port; undefined for plaintext. */
  readonly tls: TlsSettings | undefined;
  readonly jsonata: JsonataSettings;
}

export interface TlsSettings {
  /** CONNECTOR_PROXY_GRPC_TLS_CERT_FILE: the server's certificate chain (PEM). */
  readonly certFile: string;
  /** CONNECTOR_PROXY_GRPC_TLS_KEY_FILE: its private key (PEM). */
  readonly keyFile: string;
  /** CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE: when set, callers must present a certificate this
   * CA signed (mutual TLS). */
  readonly clientCaFile: string | undefined;
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
    apiKey: apiKey(env),
    tls: tls(env),
    jsonata: {
      timeLimitMs: integer("CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS", 1000, 1, 2 ** 31 - 1),
      maxDepth: integer("CONNECTOR_PROXY_JSONATA_MAX_DEPTH", 500, 1),
      workers: integer("CONNECTOR_PROXY_JSONATA_WORKERS", availableParallelism(), 1, 1024),
      maxMemoryMb: integer("CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB", 512, 16),
    },
  };
}

/** As the Python server: a key that is set but blank is refused rather than leaving the server
 * open; any other value is the key as given. */
function apiKey(env: Env): string | undefined {
  const key = env["CONNECTOR_PROXY_API_KEY"];
  if (key !== undefined && key.trim() === "") {
    throw new SettingsError("CONNECTOR_PROXY_API_KEY is set but empty; unset it to run without a key");
  }
  return key;
}

/** The certificate and key go together; a client CA needs both. */
function tls(env: Env): TlsSettings | undefined {
  const path = (name: string): string | undefined => env[name]?.trim() || undefined;
  const certFile = path("CONNECTOR_PROXY_GRPC_TLS_CERT_FILE");
  const keyFile = path("CONNECTOR_PROXY_GRPC_TLS_KEY_FILE");
  const clientCaFile = path("CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new SettingsError("CONNECTOR_PROXY_GRPC_TLS_CERT_FILE and CONNECTOR_PROXY_GRPC_TLS_KEY_FILE go together");
  }
  if (certFile === undefined || keyFile === undefined) {
    if (clientCaFile !== undefined) {
      throw new SettingsError(
        "CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE needs CONNECTOR_PROXY_GRPC_TLS_CERT_FILE and _KEY_FILE",
      );
    }
    return undefined;
  }
  return { certFile, keyFile, clientCaFile };
}
