/**
 * grpc.health.v1 (Check and Watch) from the official grpc-health-check package, plus what it
 * lacks for a clean shutdown: ending the Watch streams.
 *
 * A proxy keeps a Watch open on every upstream. grpc-js's tryShutdown waits for every open call,
 * so without ending the watches each shutdown would wait out its whole grace period even with no
 * command in flight (measured: 5.0 s with a 5 s grace, against 0.03 s once they are ended).
 */

import type * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";

type Watch = grpc.ServerWritableStream<unknown, unknown>;

export class Health {
  private readonly health = new HealthImplementation();
  private readonly watches = new Set<Watch>();
  private readonly names = new Set<string>([""]);

  /** Adds the Health service to `server`, noting each Watch call as it starts. */
  register(server: grpc.Server): void {
    this.health.addToServer({
      addService: (service, implementation) => {
        const watch = implementation["watch"] as grpc.handleServerStreamingCall<unknown, unknown>;
        server.addService(service as grpc.ServiceDefinition, {
          ...(implementation as grpc.UntypedServiceImplementation),
          watch: (call: Watch) => {
            this.watches.add(call);
            call.on("cancelled", () => this.watches.delete(call));
            watch(call);
          },
        });
      },
    });
  }

  /** "" (the server) and each of `services` answer SERVING. */
  serving(services: readonly string[]): void {
    for (const name of services) this.names.add(name);
    for (const name of this.names) this.health.setStatus(name, "SERVING");
  }

  /** Everything answers NOT_SERVING (watchers are told), then the Watch streams end. */
  stop(): void {
    for (const name of this.names) this.health.setStatus(name, "NOT_SERVING");
    for (const call of this.watches) call.end();
    this.watches.clear();
  }
}
