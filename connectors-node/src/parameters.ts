/**
 * Required parameters, read from the proto like the Python server does (server/schema.py):
 * a field marked `[(spiff.connector.v1.field) = {required: true}]` must be present, or, for a
 * field without presence, non-empty. The proxy checks this before calling, but a direct gRPC
 * caller must get the same InvalidParameters answer.
 */

import { getOption, isFieldSet, type DescField, type DescMessage, type MessageShape } from "@bufbuild/protobuf";

import { field as fieldOptions } from "../gen/spiff/connector/v1/options_pb.js";

/** The required top-level fields of a request message, computed once per message type. */
export function requiredFields(schema: DescMessage): readonly DescField[] {
  return schema.fields.filter((field) => getOption(field, fieldOptions).required);
}

/** The names of `required` fields that `message` leaves absent or empty (protobuf-es's
 * isFieldSet has the same meaning as Python's check: presence where the field has it,
 * a non-default value otherwise, at least one element for repeated fields). */
export function missingFields<Desc extends DescMessage>(
  message: MessageShape<Desc>,
  required: readonly DescField[],
): string[] {
  return required.filter((field) => !isFieldSet(message, field)).map((field) => field.name);
}
