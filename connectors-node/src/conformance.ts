/**
 * conformance/Echo, Fail and Sleep (protos/spiff/connector/conformance/v1/conformance.proto),
 * served instead of the production connectors when CONNECTOR_NODE_CONFORMANCE=1: the cases
 * tests/federation/test_conformance.py runs through the proxy against this server and a Python
 * one (tests/conformance_connectors/conformance.py, which this mirrors line for line).
 */

import { setTimeout as sleep } from "node:timers/promises";

import { create } from "@bufbuild/protobuf";
import { status as Status } from "@grpc/grpc-js";

import {
  ConformanceService,
  EchoResponseSchema,
  SleepResponseSchema,
} from "../gen/spiff/connector/conformance/v1/conformance_pb.js";
import { connector, type Connector } from "./command.js";
import { CommandError } from "./errors.js";

export function conformanceConnector(): Connector {
  return connector(ConformanceService, {
    echo: async (request, context) => {
      if (request.log !== "") context.log(request.log);
      return create(EchoResponseSchema, { value: request.value });
    },
    fail: async (request, context) => {
      context.log(`failing with ${request.grpcCode} as asked`);
      const code = (Status as unknown as Record<string, number | undefined>)[request.grpcCode];
      // An unknown name, or OK (which is no failure), fails unexpectedly, as in Python.
      if (code === undefined || code === Status.OK) throw new Error(`${request.grpcCode} is not an error code`);
      const violations = request.badFields.map((field) => ({ field, description: "is wrong" }));
      throw new CommandError(code, request.message, request.errorCode, violations);
    },
    sleep: async (request, context) => {
      context.log(`sleeping ${Number(request.seconds.toPrecision(6))} s`);
      const started = performance.now();
      try {
        await sleep(request.seconds * 1000, undefined, { signal: context.signal });
      } catch {
        // The deadline came: the server has answered DeadlineExceeded already.
      }
      return create(SleepResponseSchema, { slept: (performance.now() - started) / 1000 });
    },
  });
}
