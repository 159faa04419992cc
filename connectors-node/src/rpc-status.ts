/**
 * The google.rpc.Status a failure travels as, in the `grpc-status-details-bin` trailer.
 *
 * Written with protobuf-es's wire writer because the google.rpc protos are not among the ones
 * this project compiles (they ship with the Python runtime, not with protos/). The messages are
 * tiny and frozen; each field below is the one of google/rpc/status.proto,
 * google/rpc/error_details.proto and google/protobuf/any.proto, written in field-number order
 * and skipping empty values as every proto3 serializer does, so the bytes equal the Python
 * server's `Failure.to_status().SerializeToString()` for the same failure.
 */

import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/** One bad parameter: google.rpc.BadRequest.FieldViolation. */
export interface Violation {
  /** The parameter's path, e.g. `bindings`. */
  readonly field: string;
  /** What is wrong with it, e.g. `must be a JSON object`. */
  readonly description: string;
}

/** The failure as google.rpc.Status carries it. */
export interface StatusDetails {
  /** The gRPC status code (never 0, OK). */
  readonly code: number;
  readonly message: string;
  /** ErrorInfo.reason: the stable error_code REST clients see. */
  readonly reason: string;
  /** ErrorInfo.domain. */
  readonly domain: string;
  /** Packed as a google.rpc.BadRequest when there are any. */
  readonly violations: readonly Violation[];
}

const TYPE_URL_PREFIX = "type.googleapis.com/";

function writeString(writer: BinaryWriter, field: number, value: string): void {
  if (value !== "") writer.tag(field, WireType.LengthDelimited).string(value);
}

/** google.protobuf.Any {string type_url = 1; bytes value = 2;} */
function packAny(typeName: string, value: Uint8Array): Uint8Array {
  const writer = new BinaryWriter();
  writeString(writer, 1, TYPE_URL_PREFIX + typeName);
  if (value.length > 0) writer.tag(2, WireType.LengthDelimited).bytes(value);
  return writer.finish();
}

/** google.rpc.ErrorInfo {string reason = 1; string domain = 2; map<string, string> metadata = 3;}
 * (no metadata, like the Python server). */
function errorInfo(reason: string, domain: string): Uint8Array {
  const writer = new BinaryWriter();
  writeString(writer, 1, reason);
  writeString(writer, 2, domain);
  return writer.finish();
}

/** google.rpc.BadRequest {repeated FieldViolation field_violations = 1;}
 * with FieldViolation {string field = 1; string description = 2;} */
function badRequest(violations: readonly Violation[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const violation of violations) {
    writer.tag(1, WireType.LengthDelimited).fork();
    writeString(writer, 1, violation.field);
    writeString(writer, 2, violation.description);
    writer.join();
  }
  return writer.finish();
}

/** google.rpc.Status {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3;}
 * with the details in the Python server's order: ErrorInfo, then BadRequest when there are violations. */
export function encodeStatus(status: StatusDetails): Uint8Array {
  const details = [packAny("google.rpc.ErrorInfo", errorInfo(status.reason, status.domain))];
  if (status.violations.length > 0) {
    details.push(packAny("google.rpc.BadRequest", badRequest(status.violations)));
  }
  const writer = new BinaryWriter();
  if (status.code !== 0) writer.tag(1, WireType.Varint).int32(status.code);
  writeString(writer, 2, status.message);
  for (const detail of details) writer.tag(3, WireType.LengthDelimited).bytes(detail);
  return writer.finish();
}
