/**
 * One-dimensional arrays as bind parameters in PostgreSQL's binary array format (what array_recv
 * reads). `pg` sends a Buffer parameter in binary, so a batch of ids, tokens and outputs reaches
 * the server as lengths and raw bytes: no array literal to escape on this side and parse on the
 * server, and no hex doubling of the outputs. A null element is sent as SQL NULL.
 */

const OID = { bool: 16, bytea: 17, int8: 20, text: 25 } as const;

function encode(elementOid: number, elements: readonly (Uint8Array | null)[]): Buffer {
  let size = 20;
  let nulls = 0;
  for (const e of elements) {
    size += 4 + (e === null ? 0 : e.byteLength);
    if (e === null) nulls = 1;
  }
  const out = Buffer.allocUnsafe(size);
  out.writeInt32BE(1, 0); // dimensions
  out.writeInt32BE(nulls, 4); // flags: has nulls
  out.writeUInt32BE(elementOid, 8);
  out.writeInt32BE(elements.length, 12);
  out.writeInt32BE(1, 16); // lower bound
  let at = 20;
  for (const e of elements) {
    out.writeInt32BE(e === null ? -1 : e.byteLength, at);
    at += 4;
    if (e === null) continue;
    out.set(e, at);
    at += e.byteLength;
  }
  return out;
}

/** A `text[]` parameter (cast it as `$n::text[]`); null elements are NULL. */
export function textArray(values: readonly (string | null)[]): Buffer {
  return encode(
    OID.text,
    values.map((v) => (v === null ? null : Buffer.from(v, "utf8"))),
  );
}

/** A `bigint[]` parameter of safe integers (cast it as `$n::bigint[]`); null elements are NULL. */
export function bigintArray(values: readonly (number | null)[]): Buffer {
  return encode(
    OID.int8,
    values.map((v) => {
      if (v === null) return null;
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

/** A `boolean[]` parameter (cast it as `$n::boolean[]`). */
export function boolArray(values: readonly boolean[]): Buffer {
  return encode(
    OID.bool,
    values.map((v) => Uint8Array.of(v ? 1 : 0)),
  );
}
