/**
 * Bytes are Uint8Array in the public API. A Buffer is a Uint8Array subclass and is accepted on
 * input, but what we hand back is always a plain Uint8Array so that JSON or structured clones
 * of results never turn into `{ "0": 1, ... }` objects or Buffer-specific shapes.
 */
export function toBytes(value: Uint8Array): Uint8Array {
  if (Object.getPrototypeOf(value) === Uint8Array.prototype) return value;
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

/** A private copy, so later mutation of the caller's array cannot change stored data. */
export function copyBytes(value: Uint8Array): Uint8Array {
  return new Uint8Array(value);
}

export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return Buffer.compare(a, b) === 0;
}

export function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}
