/**
 * Who may call the server, as server/security.py decides for the Python one: the API key as
 * metadata, and TLS with optional client certificates.
 *
 * With a key, every call but grpc.health.v1 (Check and Watch) needs it in the metadata
 * `spiff-connector-proxy-api-key`, else UNAUTHENTICATED before the handler runs. Reflection is
 * closed too (the schema is for callers), and so are methods the server does not have: a caller
 * without the key learns nothing of what exists.
 */

import { X509Certificate, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";

import * as grpc from "@grpc/grpc-js";

import { SettingsError, type TlsSettings } from "./settings.js";

export const API_KEY_METADATA = "spiff-connector-proxy-api-key";
/** Callers that cannot hold a key (load balancers, orchestrators' probes) must see health. */
export const OPEN_PREFIX = "/grpc.health.v1.Health/";

const REFUSED = Object.freeze({
  code: grpc.status.UNAUTHENTICATED,
  details: `this server needs its API key in the ${API_KEY_METADATA} metadata`,
});

/** Whether `given` is `expected`, in time that depends on neither's content. A different length
 * is a refusal after the same comparison of `expected` with itself, so the time does not reveal
 * how long the key is either. */
export function sameKey(given: Buffer, expected: Buffer): boolean {
  const sameLength = given.length === expected.length;
  return timingSafeEqual(sameLength ? given : expected, expected) && sameLength;
}

/** The interceptor refusing calls without `apiKey` (non-empty: settings.ts refuses a blank one). */
export function apiKeyInterceptor(apiKey: string): grpc.ServerInterceptor {
  if (apiKey === "") throw new Error("an empty API key would leave the server open");
  const expected = Buffer.from(apiKey, "utf8");
  const authorized = (metadata: grpc.Metadata): boolean => {
    // The first value, as the Python server reads it.
    const [value] = metadata.get(API_KEY_METADATA);
    if (value === undefined) return false;
    return sameKey(typeof value === "string" ? Buffer.from(value, "utf8") : value, expected);
  };
  // A refused call's handler never starts: it only does once the metadata is passed on.
  return (method, call) => {
    if (method.path.startsWith(OPEN_PREFIX)) return new grpc.ServerInterceptingCall(call);
    if (method.requestStream) return new grpc.ServerInterceptingCall(call, streamingGate(call, authorized));
    // Unary (every command): refused as soon as the metadata is in, the message unread.
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => (authorized(metadata) ? pass(metadata) : call.sendStatus(REFUSED)),
        }),
    });
  };
}

/**
 * A call whose caller streams its messages (reflection) is refused once its first message or
 * its end has arrived, not before: a grpc.aio client (the proxy reading a schema) sends the
 * metadata and the first message separately, and when the status beats that message, it reports
 * "INTERNAL: Internal error from Core" instead of UNAUTHENTICATED. The message is read as the
 * method reads it; such methods here take bytes as they come (reflection, unknownMethod).
 */
function streamingGate(
  call: grpc.ServerInterceptingCallInterface,
  authorized: (metadata: grpc.Metadata) => boolean,
): grpc.Responder {
  let allowed = false;
  const refuse = () => call.sendStatus(REFUSED);
  return {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, pass) => {
          allowed = authorized(metadata);
          if (allowed) pass(metadata);
          else call.startRead(); // one message or the end, then the refusal
        },
        onReceiveMessage: (message, pass) => (allowed ? pass(message) : refuse()),
        onReceiveHalfClose: (pass) => (allowed ? pass() : refuse()),
      }),
  };
}

/** grpc-js's private per-path lookup, `Server._retrieveHandler`, and the handler it returns
 * (grpc-js 1.14, pinned in package.json). */
type RetrieveHandler = (this: grpc.Server, path: string) => object | null;

/**
 * grpc-js answers a method it does not serve UNIMPLEMENTED before any interceptor runs, so a
 * caller without the key could tell which methods exist. This gives such a method a handler
 * that answers what grpc-js would (UNIMPLEMENTED, naming the method), so the key is checked
 * first, as the Python server does.
 *
 * grpc-js has no public hook for it: this wraps its `_retrieveHandler`. A grpc-js without it
 * stops the start rather than serve with that gap; tests/node/test_security.py checks both
 * answers.
 */
export function interceptUnknownMethods(server: grpc.Server): void {
  const internals = server as unknown as { _retrieveHandler?: RetrieveHandler };
  const retrieve = internals._retrieveHandler;
  if (typeof retrieve !== "function") {
    throw new Error("this @grpc/grpc-js has no Server._retrieveHandler; update src/security.ts for it");
  }
  internals._retrieveHandler = function (this: grpc.Server, path: string) {
    return retrieve.call(this, path) ?? unknownMethod(path);
  };
}

/** A handler as grpc-js registers one (Server.register), answering UNIMPLEMENTED with grpc-js's
 * own message once the interceptors let the call through. Bidirectional, so that it takes any
 * call; it answers at the caller's first message or end (see streamingGate for why not before). */
function unknownMethod(path: string): object {
  const status: Partial<grpc.StatusObject> = {
    code: grpc.status.UNIMPLEMENTED,
    details: `The server does not implement the method ${path}`,
  };
  const bytes = (value: Buffer): Buffer => value;
  return {
    func: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      let answered = false;
      const answer = () => {
        if (answered) return;
        answered = true;
        call.emit("error", status);
      };
      call.on("data", answer);
      call.on("end", answer);
    },
    serialize: bytes,
    deserialize: bytes,
    type: "bidi",
    path,
  };
}

/** Plaintext without `tls`; else TLS with the files' certificate and key, and with a client CA,
 * callers need a certificate it signed.
 * @throws SettingsError naming a file that cannot be read or does not hold what it should. */
export function serverCredentials(tls: TlsSettings | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  const cert = readPem(tls.certFile, "TLS certificate file");
  const key = readPem(tls.keyFile, "TLS key file");
  try {
    // What grpc-js builds when it binds, checked now so that the message names the settings.
    createSecureContext({ cert, key });
  } catch (error) {
    throw new SettingsError(
      `CONNECTOR_PROXY_GRPC_TLS_CERT_FILE and _KEY_FILE must hold a PEM certificate and its key: ${reason(error)}`,
    );
  }
  let clientCa: Buffer | null = null;
  if (tls.clientCaFile !== undefined) {
    clientCa = readPem(tls.clientCaFile, "client CA file");
    try {
      new X509Certificate(clientCa); // Node.js takes any bytes as roots, and then trusts no one.
    } catch (error) {
      throw new SettingsError(`CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE must hold PEM certificates: ${reason(error)}`);
    }
  }
  return grpc.ServerCredentials.createSsl(clientCa, [{ private_key: key, cert_chain: cert }], clientCa !== null);
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    // "ENOENT: no such file or directory, open '<path>'" without the path, which comes first.
    throw new SettingsError(`cannot read the ${what} ${path}: ${reason(error).replace(/, \w+ '.*'$/s, "")}`);
  }
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
