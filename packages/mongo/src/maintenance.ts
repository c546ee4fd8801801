/*
 * What cleans up, always as part of another operation (the adapter runs nothing in the
 * background): expired claims are dropped once stale by a write that rewrites the claims anyway,
 * and the blobs a write or a delete leaves unreferenced are collected by that call. Blobs left
 * over by a crash or a lost reply are not swept here (see the README, Limits).
 */
import type { ChunkStore } from "./chunks.js";
import type { ClaimEntry, InstanceDoc } from "./layout.js";

/**
 * How long an expired claim is kept before a write that rewrites the claims anyway drops it.
 * Until then its holder's release succeeds and its extend gives ClaimLostError, as everywhere;
 * after it, either may give NotFoundError (the claim is gone), if the instance was written since.
 */
export const PRUNE_EXPIRED_AFTER_MS = 60 * 60 * 1000;

/**
 * Is this claim expired for long enough to be dropped (see PRUNE_EXPIRED_AFTER_MS)? A revoked
 * claim counts from its revocation `x` (its expiry is the epoch, which would drop it at once).
 */
export function isStale(claim: ClaimEntry, now: number): boolean {
  const since = claim.x ?? claim.e;
  return since !== null && Number(since) + PRUNE_EXPIRED_AFTER_MS <= now;
}

/** The claims without the stale ones, or undefined when there is none to drop. */
export function prunedClaims(doc: InstanceDoc | null, now: number): ClaimEntry[] | undefined {
  const claims = doc?.c ?? [];
  const kept = claims.filter((c) => !isStale(c, now));
  return kept.length === claims.length ? undefined : kept;
}

/** Does any claim of the document expire (so that pruning needs the clock)? */
export const hasExpiringClaims = (doc: InstanceDoc | null): boolean =>
  (doc?.c ?? []).some((entry) => entry.e !== null);

/**
 * Deletes blobs that no committed document refers to any more (the versions a commit replaced,
 * the blobs of a write that did not land, those of a deleted snapshot). Best effort: the commit
 * was the commit point, so a failure here changes no outcome; what is left is garbage.
 */
export async function collectBlobs(chunks: ChunkStore, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await chunks.delete(ids).catch(() => undefined);
}
