// Calls the proxy's gRPC server with the generated TypeScript client:
//   node dist/examples/call.js <host:port> <message>
// prints each response as a JSON line, or the gRPC error on stderr (exit status 1).
import { toJson } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ExampleResponseSchema, ExampleService } from "../gen/spiff/connector/example/v1/example_pb.js";
import { JobsService, ListJobsResponseSchema } from "../gen/spiff/proxy/v1/jobs_pb.js";

const [target, message = ""] = process.argv.slice(2);
if (target === undefined) {
  console.error("usage: node dist/examples/call.js <host:port> <message>");
  process.exit(2);
}
// gRPC over HTTP/2 (connect-node v2's gRPC transport always is), to a plain gRPC server.
const transport = createGrpcTransport({ baseUrl: `http://${target}`, defaultTimeoutMs: 10_000 });
const json = { alwaysEmitImplicit: true };

// google.rpc.ErrorInfo's reason (field 1) is the error_code REST clients see.
function reason(value: Uint8Array): string {
  const reader = new BinaryReader(value);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) return reader.string();
    reader.skip(wireType);
  }
  return "";
}

try {
  const example = await createClient(ExampleService, transport).example({ message });
  console.log(JSON.stringify({ example: toJson(ExampleResponseSchema, example, json) }));
  const jobs = await createClient(JobsService, transport).listJobs({ limit: 10 });
  console.log(JSON.stringify({ listJobs: toJson(ListJobsResponseSchema, jobs, json) }));
} catch (caught) {
  const error = ConnectError.from(caught);
  const details = error.details.map((detail) =>
    "type" in detail
      ? { type: detail.type, ...(detail.type === "google.rpc.ErrorInfo" && { reason: reason(detail.value) }) }
      : { type: detail.desc.typeName },
  );
  console.error(JSON.stringify({ error: { code: Code[error.code], message: error.rawMessage, details } }));
  process.exitCode = 1;
}
