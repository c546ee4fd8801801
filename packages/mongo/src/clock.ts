import type { Document } from "mongodb";

/**
 * The clock that judges claim expiry, as query and update fragments over a claim's `e`
 * (expiresAt, a BSON date or null) and `c` (claimedAt).
 *
 * - "server": `$$NOW` inside `$expr` filters and pipeline updates: one clock (the server's)
 *   for every client. Strings from callers are wrapped in `$literal` so that an id such as
 *   "$gt" is never read as a field path or an operator.
 * - "client": `Date.now()` of the calling process, in classic filters and `$set` updates;
 *   correct as long as the clients' clocks agree within the skew budget in the README.
 */
export interface ClaimClock {
  readonly mode: "server" | "client";
  /** Matches a claim whose ttl has run out. */
  expired(): Document;
  /** Matches a claim with a ttl that has not run out. */
  liveTtl(): Document;
  /** The update that writes a fresh claim. */
  claim(instanceId: string, workerId: string, ttlMs: number | null, token: number): Document | Document[];
  /** The update that renews a claim with a ttl to now + durationMs. */
  renew(durationMs: number): Document | Document[];
}

const isDate = { $eq: [{ $type: "$e" }, "date"] };

export const serverClock: ClaimClock = {
  mode: "server",
  expired: () => ({ $expr: { $and: [isDate, { $lte: ["$e", "$$NOW"] }] } }),
  liveTtl: () => ({ $expr: { $and: [isDate, { $gt: ["$e", "$$NOW"] }] } }),
  claim: (instanceId, workerId, ttlMs, token) => [
    {
      $set: {
        i: { $literal: instanceId },
        w: { $literal: workerId },
        c: "$$NOW",
        e: ttlMs === null ? { $literal: null } : { $add: ["$$NOW", ttlMs] },
        k: { $literal: token },
      },
    },
  ],
  renew: (durationMs) => [{ $set: { e: { $add: ["$$NOW", durationMs] } } }],
};

export function clientClock(now: () => number = Date.now): ClaimClock {
  return {
    mode: "client",
    expired: () => ({ e: { $type: "date", $lte: new Date(now()) } }),
    liveTtl: () => ({ e: { $type: "date", $gt: new Date(now()) } }),
    claim: (instanceId, workerId, ttlMs, token) => {
      const t = now();
      return {
        $set: {
          i: instanceId,
          w: workerId,
          c: new Date(t),
          e: ttlMs === null ? null : new Date(t + ttlMs),
          k: token,
        },
      };
    },
    renew: (durationMs) => ({ $set: { e: new Date(now() + durationMs) } }),
  };
}
