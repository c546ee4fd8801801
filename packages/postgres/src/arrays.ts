/**
 * One-dimensional arrays as bind parameters in PostgreSQL's binary array format (what array_recv
 * reads). `pg` sends a Buffer parameter in binary, so a batch of ids, tokens and outputs reaches
 * the server as lengths and raw bytes: no array literal to escape on this side and parse on the
 * server, and no hex doubling of the outputs.
 */

const OID = { bytea: 17, int8: 20, text: 25 } as const;

function encode(elementOid: number, elements: readonly Uint8Array[]): Buffer {
  let size = 20;
  for (const e of elements) size += 4 + e.byteLength;
  const out = Buffer.allocUnsafe(size);
  out.writeInt32BE(1, 0); // dimensions
  out.writeInt32BE(0, 4); // flags: no nulls
  out.writeUInt32BE(elementOid, 8);
  out.writeInt32BE(elements.length, 12);
  out.writeInt32BE(1, 16); // lower bound
  let at = 20;
  for (const e of elements) {
    out.writeInt32BE(e.byteLength, at);
    at += 4;
    out.set(e, at);
    at += e.byteLength;
  }
  return out;
}

/** A `text[]` parameter (cast it as `$n::text[]`). */
export function textArray(values: readonly string[]): Buffer {
  return encode(
    OID.text,
    values.map((v) => Buffer.from(v, "utf8")),
  );
}

/** A `bigint[]` parameter of safe integers (cast it as `$n::bigint[]`). */
export function bigintArray(values: readonly number[]): Buffer {
  return encode(
    OID.int8,
    values.map((v) => {
      const b = Buffer.allocUnsafe(8);
      b.writeBigInt64BE(BigInt(v));
      return b;
    }),
  );
}

/** A `bytea[]` parameter (cast it as `$n::bytea[]`). */
export function byteaArray(values: readonly Uint8Array[]): Buffer {
  return encode(OID.bytea, values);
}
