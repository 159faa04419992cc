/**
 * The gRPC server: the connectors, grpc.health.v1 and server reflection, as server/app.py
 * builds the Python one, with its API key and TLS (security.ts).
 */

import * as grpc from "@grpc/grpc-js";

import type { Connector } from "./command.js";
import { DescriptorFiles } from "./descriptors.js";
import { Health } from "./health.js";
import { addReflection } from "./reflection.js";
import { apiKeyInterceptor, interceptUnknownMethods } from "./security.js";
import type { Settings } from "./settings.js";

const HEALTH_SERVICE = "grpc.health.v1.Health";

export interface RunningServer {
  readonly server: grpc.Server;
  readonly health: Health;
  /** The bound port (the chosen one when the settings ask for port 0). */
  readonly port: number;
  /** The connector services, for health. */
  readonly services: readonly string[];
}

/** Builds the server and binds it to settings.host:settings.port with `credentials`
 * (security.ts: serverCredentials); with settings.apiKey, every call but health needs the key.
 * `descriptorSets` are the FileDescriptorSet files reflection serves (they must describe every
 * connector's service). */
export async function startServer(
  settings: Settings,
  credentials: grpc.ServerCredentials,
  connectors: readonly Connector[],
  descriptorSets: readonly string[],
): Promise<RunningServer> {
  const server = new grpc.Server({
    interceptors: settings.apiKey === undefined ? [] : [apiKeyInterceptor(settings.apiKey)],
    // As the Python server: messages (and so task data) up to twice CONNECTOR_PROXY_MAX_BODY_BYTES.
    "grpc.max_receive_message_length": settings.maxMessageBytes,
    "grpc.max_send_message_length": settings.maxMessageBytes,
    // Keepalive pings from the proxy need no option here: unlike gRPC core (whose servers allow
    // one ping per 5 minutes without calls, and answer more with GOAWAY too_many_pings), grpc-js
    // servers enforce no ping policy; they send no pings of their own by default either.
  });
  if (settings.apiKey !== undefined) interceptUnknownMethods(server);

  const files = DescriptorFiles.load(descriptorSets);
  const services = connectors.map((c) => c.service);
  for (const service of services) {
    if (!files.hasService(service)) {
      throw new Error(`the descriptor sets do not describe ${service}; rebuild (make build-node)`);
    }
  }
  for (const connector of connectors) connector.register(server);
  const health = new Health();
  health.register(server);
  addReflection(server, files, [...services, HEALTH_SERVICE]);

  const port = await bind(server, address(settings.host, settings.port), credentials);
  health.serving(services);
  return { server, health, port, services };
}

/** host:port, with brackets for an IPv6 address. */
export function address(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function bind(server: grpc.Server, target: string, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(target, credentials, (error, port) => {
      if (error === null) resolve(port);
      else reject(new Error(`could not bind the gRPC server to ${target}: ${error.message}`));
    });
  });
}
