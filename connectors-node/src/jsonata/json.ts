/**
 * JSON in and out of JSONata, which computes with JavaScript values: numbers are 64-bit floats.
 *
 * In: strict JSON (what JSON.parse accepts), and like the Python server (server/json_values.py)
 * no number that overflows to Infinity (1e400). Integers beyond ±2^53 parse to the nearest
 * float; they are counted so the caller is told, instead of silently getting other digits back.
 * In: a value JSON can carry; a function in the result (a lambda, a built-in such as $sum, a
 * regular expression) is reported rather than dropped, which is what JSON.stringify would do.
 */

/** A number JSON.parse may not hold exactly or at all: 16+ digits in a row, or a 3-digit
 * exponent. Only then does parsing pay for a reviver; the plain parse is several times faster. */
const SUSPICIOUS_NUMBER = /\d{16}|[eE][+]?\d{3}/;

export type ParsedJson =
  | { readonly ok: true; readonly value: unknown; readonly inexactIntegers: number }
  | { readonly ok: false };

/** Parses JSON text; not ok for invalid JSON and for numbers out of the float range. */
export function parseJson(text: string): ParsedJson {
  try {
    if (!SUSPICIOUS_NUMBER.test(text)) return { ok: true, value: JSON.parse(text), inexactIntegers: 0 };
    let inexactIntegers = 0;
    let overflow = false;
    const value: unknown = JSON.parse(text, (_key, item: unknown) => {
      if (typeof item === "number") {
        if (!Number.isFinite(item)) overflow = true;
        else if (Number.isInteger(item) && !Number.isSafeInteger(item)) inexactIntegers += 1;
      }
      return item;
    });
    return overflow ? { ok: false } : { ok: true, value, inexactIntegers };
  } catch {
    return { ok: false };
  }
}

export type Serialized = { readonly ok: true; readonly json: string } | { readonly ok: false; readonly what: string };

class HoldsFunction extends Error {}

/** A JSONata lambda or built-in: objects marked by the library. */
function isJsonataFunction(value: object): boolean {
  const marks = value as { _jsonata_lambda?: unknown; _jsonata_function?: unknown };
  return marks._jsonata_lambda === true || marks._jsonata_function === true;
}

/** The result as compact JSON text; `undefined` (the expression yielded nothing) is `null`. */
export function serializeResult(value: unknown): Serialized {
  try {
    const json = JSON.stringify(value, function (this: unknown, key: string, item: unknown) {
      if (typeof item === "function" || (typeof item === "object" && item !== null && isJsonataFunction(item))) {
        const where = Array.isArray(this) ? `at index ${key}` : `under the key ${JSON.stringify(key)}`;
        throw new HoldsFunction(key === "" ? "The result is a function" : `The result holds a function (${where})`);
      }
      return item;
    });
    return { ok: true, json: json ?? "null" };
  } catch (error) {
    if (error instanceof HoldsFunction) return { ok: false, what: error.message };
    return { ok: false, what: `The result cannot be written as JSON (${String(error)})` };
  }
}
