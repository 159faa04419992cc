/**
 * gRPC server reflection, grpc.reflection.v1 and v1alpha (the same messages under two package
 * names; the proxy's Python client speaks v1alpha, grpcurl v1), answering like grpcio-reflection's
 * server: original_request echoed, files with their transitive imports, services sorted,
 * NOT_FOUND / "not found" for an unknown file or symbol.
 *
 * The messages are read and written with protobuf-es's wire reader and writer: the reflection
 * protos are not among the ones this project compiles, and these few fields are frozen
 * (grpc/reflection/v1/reflection.proto).
 */

import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";

import type { DescriptorFiles } from "./descriptors.js";

export const REFLECTION_SERVICES = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/** ServerReflectionRequest's oneof message_request, by field number. */
type ReflectionRequest =
  | { readonly kind: "fileByFilename"; readonly name: string } // 3
  | { readonly kind: "fileContainingSymbol"; readonly symbol: string } // 4
  | { readonly kind: "fileContainingExtension"; readonly extendee: string; readonly number: number } // 5
  | { readonly kind: "allExtensionNumbersOfType"; readonly extendee: string } // 6
  | { readonly kind: "listServices" } // 7
  | { readonly kind: "unknown" };

/** Registers both reflection services, describing `files` and listing `serviceNames` (plus the
 * reflection services themselves). */
export function addReflection(server: grpc.Server, files: DescriptorFiles, serviceNames: readonly string[]): void {
  const listed = [...new Set([...serviceNames, ...REFLECTION_SERVICES])].sort();
  const handler: grpc.handleBidiStreamingCall<Buffer, Uint8Array> = (call) => {
    call.on("data", (request: Buffer) => call.write(respond(request, files, listed)));
    call.on("end", () => call.end());
    call.on("error", () => undefined); // the caller went away; nothing to answer
  };
  for (const service of REFLECTION_SERVICES) {
    const definition: grpc.ServiceDefinition = {
      ServerReflectionInfo: {
        path: `/${service}/ServerReflectionInfo`,
        requestStream: true,
        responseStream: true,
        requestSerialize: (bytes: Buffer) => bytes,
        requestDeserialize: (bytes: Buffer) => bytes,
        responseSerialize: (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        responseDeserialize: (bytes: Buffer) => bytes,
      },
    };
    server.addService(definition, { ServerReflectionInfo: handler });
  }
}

/** One ServerReflectionResponse: original_request = 2 (echoed as received), then one of
 * file_descriptor_response = 4, all_extension_numbers_response = 5, list_services_response = 6,
 * error_response = 7. */
function respond(requestBytes: Uint8Array, files: DescriptorFiles, services: readonly string[]): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(2, WireType.LengthDelimited).bytes(requestBytes);
  const request = parseRequest(requestBytes);
  switch (request.kind) {
    case "fileByFilename":
      return fileResponse(writer, files.fileWithDependencies(request.name));
    case "fileContainingSymbol":
      return fileResponse(writer, files.fileContainingSymbol(request.symbol));
    case "fileContainingExtension":
      return fileResponse(writer, files.fileContainingExtension(request.extendee, request.number));
    case "allExtensionNumbersOfType": {
      const numbers = files.extensionNumbers(request.extendee);
      if (numbers === undefined) return errorResponse(writer, grpc.status.NOT_FOUND, "not found");
      // ExtensionNumberResponse {string base_type_name = 1; repeated int32 extension_number = 2 (packed)}
      writer.tag(5, WireType.LengthDelimited).fork();
      writer.tag(1, WireType.LengthDelimited).string(request.extendee);
      if (numbers.length > 0) {
        writer.tag(2, WireType.LengthDelimited).fork();
        for (const number of numbers) writer.int32(number);
        writer.join();
      }
      return writer.join().finish();
    }
    case "listServices":
      // ListServiceResponse {repeated ServiceResponse service = 1} with ServiceResponse {string name = 1}
      writer.tag(6, WireType.LengthDelimited).fork();
      for (const name of services) {
        writer.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(name).join();
      }
      return writer.join().finish();
    case "unknown":
      return errorResponse(writer, grpc.status.INVALID_ARGUMENT, "invalid argument");
  }
}

/** FileDescriptorResponse {repeated bytes file_descriptor_proto = 1}, or NOT_FOUND. */
function fileResponse(writer: BinaryWriter, found: Uint8Array[] | undefined): Uint8Array {
  if (found === undefined) return errorResponse(writer, grpc.status.NOT_FOUND, "not found");
  writer.tag(4, WireType.LengthDelimited).fork();
  for (const file of found) writer.tag(1, WireType.LengthDelimited).bytes(file);
  return writer.join().finish();
}

/** ErrorResponse {int32 error_code = 1; string error_message = 2}, worded as grpcio-reflection's. */
function errorResponse(writer: BinaryWriter, code: grpc.status, message: string): Uint8Array {
  writer.tag(7, WireType.LengthDelimited).fork();
  writer.tag(1, WireType.Varint).int32(code);
  writer.tag(2, WireType.LengthDelimited).string(message);
  return writer.join().finish();
}

/** ServerReflectionRequest {string host = 1; oneof message_request {...}}; the last oneof field
 * wins, as in any protobuf parser. A malformed request is "unknown". */
function parseRequest(bytes: Uint8Array): ReflectionRequest {
  let request: ReflectionRequest = { kind: "unknown" };
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [fieldNo, wireType] = reader.tag();
      if (wireType !== WireType.LengthDelimited || fieldNo < 3 || fieldNo > 7) {
        reader.skip(wireType);
        continue;
      }
      if (fieldNo === 5) {
        request = parseExtensionRequest(reader.bytes());
        continue;
      }
      const text = reader.string();
      if (fieldNo === 3) request = { kind: "fileByFilename", name: text };
      else if (fieldNo === 4) request = { kind: "fileContainingSymbol", symbol: text };
      else if (fieldNo === 6) request = { kind: "allExtensionNumbersOfType", extendee: text };
      else request = { kind: "listServices" };
    }
  } catch {
    return { kind: "unknown" };
  }
  return request;
}

/** ExtensionRequest {string containing_type = 1; int32 extension_number = 2} */
function parseExtensionRequest(bytes: Uint8Array): ReflectionRequest {
  let extendee = "";
  let number = 0;
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1 && wireType === WireType.LengthDelimited) extendee = reader.string();
    else if (fieldNo === 2 && wireType === WireType.Varint) number = reader.int32();
    else reader.skip(wireType);
  }
  return { kind: "fileContainingExtension", extendee, number };
}
