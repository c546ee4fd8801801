/*
 * Claims: claim, release, extend, the fencing-token counter, and claim-next's give-back. A claim lives in the `c` array
 * of its instance's document, so each of these is one compare-and-set of that document.
 */
import { BackendError, ErrorCode, type RenewedClaim, type TaskClaim } from "@sayiir/persistence-core";
import {
  backoffDelay,
  extendRefusal,
  RETRY,
  releaseRefusal,
  retryOnRace,
  sleep,
} from "@sayiir/persistence-core/adapter";
import type { Document } from "mongodb";
import { takeoverAttempts } from "./attempts.js";
import { type MongoContext, quote, RACE } from "./context.js";
import {
  claimOn,
  heldClaim,
  isExpired,
  liveClaimOn,
  markedLapsed,
  statusOf,
  toTaskClaim,
  withClaim,
} from "./instance.js";
import { type ClaimEntry, type InstanceDoc, isSnapshot, META } from "./layout.js";
import { isDuplicateKey } from "./pending-blobs.js";

/**
 * Reserves `count` fresh fencing tokens from the global counter; returns the first. Tokens are
 * always reserved AFTER reading the document version the claim commits against: every token
 * already committed on that instance (or on a deleted earlier incarnation of it) was reserved
 * before that read, so ours is larger; a claim committed after the read changes the version
 * and our compare-and-set fails.
 */
export function reserveTokens(ctx: MongoContext, count: number): Promise<number> {
  return retryOnRace(
    "the fencing-token counter",
    async (attempt) => {
      try {
        const doc = await ctx.meta.findOneAndUpdate(
          { _id: META.token },
          { $inc: { n: count } },
          // The projection is what makes the reply a copy taken inside the update: without
          // one, mongo-java-server returns its live document and encodes it after releasing
          // the collection, so a concurrent $inc can show two callers the same counter value
          // (two claims with one token: a call whose compare-and-set lost would then take the
          // winner's claim for its own and hand the same task out a second time).
          { upsert: true, returnDocument: "after", projection: { _id: 0, n: 1 } },
        );
        const last = Number(doc?.n);
        if (!Number.isSafeInteger(last)) throw new BackendError("the token counter holds no integer");
        return last - count + 1;
      } catch (error) {
        // Two first-ever upserts can race on the counter's _id; the loser simply retries.
        if (isDuplicateKey(error) && attempt < 5) return RETRY;
        throw error;
      }
    },
    { attempts: 6 },
  );
}

/** A new claim entry, stamped at `now` on the claim clock. */
export function newClaim(
  taskId: string,
  workerId: string,
  token: number,
  now: number,
  ttlMs: number | null,
): ClaimEntry {
  return { t: taskId, w: workerId, k: token, c: now, e: ttlMs === null ? null : now + ttlMs };
}

/**
 * The changes of a claim-next commit that puts `entry` on `taskId`: the claims, and when it takes
 * over an expired claim on the runnable task, the attempts with one more (a takeover counts).
 */
export function claimChanges(
  doc: InstanceDoc | null,
  taskId: string,
  entry: ClaimEntry,
  now: number,
): Partial<InstanceDoc> {
  const at = takeoverAttempts(doc, taskId, now);
  const c = withClaim(doc, taskId, entry, now);
  return at === undefined ? { c } : { c, at };
}

/**
 * The claim state a claim-next compare-and-set requires beside the version it read: the claim on
 * `taskId` as read (none, or that very entry, expired, by its token). Judged by the server inside
 * the write, so a claim another worker committed since is never replaced, even if the version
 * read was not what the claim decision was taken on (mongo-java-server encodes a document read
 * without a projection after releasing the collection: a concurrent write can tear it).
 */
export function claimFence(doc: InstanceDoc, taskId: string): Document {
  const seen = claimOn(doc, taskId);
  return seen === undefined ? { "c.t": { $ne: taskId } } : { c: { $elemMatch: { t: taskId, k: seen.k } } };
}

/**
 * Is `stored` (as read back) the claim `entry` a claim-next commit put there: its token, and
 * beside it its worker and claim time (a token is unique, but a read-back that took another
 * call's claim for its own would hand one task to two callers).
 */
export const sameClaim = (stored: ClaimEntry | undefined, entry: ClaimEntry): boolean =>
  stored !== undefined &&
  Number(stored.k) === entry.k &&
  stored.w === entry.w &&
  Number(stored.c) === entry.c;

export function claimTask(
  ctx: MongoContext,
  instanceId: string,
  taskId: string,
  workerId: string,
  ttlMs: number | null,
): Promise<TaskClaim | null> {
  return retryOnRace(
    `claimTask: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId);
      const now = await ctx.now();
      if (liveClaimOn(doc, taskId, now) !== undefined) return null;
      const entry = newClaim(taskId, workerId, await reserveTokens(ctx, 1), now, ttlMs);
      // Not counted as an attempt (only claim-next's takeovers are): the fencing group requires
      // a takeover by claimTask to leave the snapshot as it was.
      if (await ctx.commit(instanceId, doc, { c: withClaim(doc, taskId, entry, now) })) {
        return toTaskClaim(instanceId, entry);
      }
      return RETRY;
    },
    RACE,
  );
}

/** Removes a claim; a placeholder (no snapshot) left without claims is deleted. */
export async function removeClaim(
  ctx: MongoContext,
  instanceId: string,
  doc: InstanceDoc,
  taskId: string,
): Promise<boolean> {
  const claims = withClaim(doc, taskId, undefined, await ctx.now());
  if (!isSnapshot(doc) && claims.length === 0) {
    const result = await ctx.snapshots.deleteOne({ _id: instanceId, v: doc.v, d: { $exists: false } });
    return result.deletedCount === 1;
  }
  return ctx.commit(instanceId, doc, { c: claims });
}

export function releaseClaim(
  ctx: MongoContext,
  instanceId: string,
  taskId: string,
  workerId: string,
): Promise<void> {
  return retryOnRace(
    `releaseTaskClaim: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId);
      const refusal = releaseRefusal(instanceId, taskId, heldClaim(doc, taskId), workerId);
      if (refusal !== null) throw refusal;
      return (await removeClaim(ctx, instanceId, doc as InstanceDoc, taskId)) ? undefined : RETRY;
    },
    RACE,
  );
}

/**
 * Renews a live claim; refused (ClaimLost) when the stored workflow is Cancelled, whether the
 * cancel revoked this claim or it was taken after the cancel. The status it judges and
 * `workflowPaused` (false when there is no snapshot) are read from the document version the
 * renewal commits over (a claim without ttl commits nothing: judged on the version read).
 */
export function extendClaim(
  ctx: MongoContext,
  instanceId: string,
  taskId: string,
  workerId: string,
  durationMs: number,
): Promise<RenewedClaim> {
  return retryOnRace(
    `extendTaskClaim: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId);
      const now = await ctx.now();
      const held = heldClaim(doc, taskId);
      const refusal = extendRefusal(instanceId, taskId, held, workerId, now, statusOf(doc));
      if (refusal !== null) {
        // Refused because the holder's own claim expired: make that durable before answering.
        const claim = claimOn(doc, taskId);
        const lapsed =
          refusal.code === ErrorCode.ClaimLost && claim?.w === workerId && isExpired(claim, now)
            ? new Set([taskId])
            : new Set<string>();
        if (!(await markLapsed(ctx, instanceId, doc, lapsed, now))) return RETRY;
        throw refusal;
      }
      const claim = claimOn(doc, taskId) as ClaimEntry;
      const workflowPaused = isSnapshot(doc) && doc.s === "Paused";
      // A claim without ttl stays without ttl (and never expires).
      if (claim.e === null) return { ...toTaskClaim(instanceId, claim), workflowPaused };
      const renewed: ClaimEntry = { ...claim, e: now + durationMs };
      if (await ctx.commit(instanceId, doc, { c: withClaim(doc, taskId, renewed, now) })) {
        return { ...toTaskClaim(instanceId, renewed), workflowPaused };
      }
      return RETRY;
    },
    RACE,
  );
}

/**
 * Makes refusals by expiry durable: one compare-and-set of the version judged that marks the
 * claims on `lapsed` lapsed (`d`, see ClaimEntry). Without it a call of the same holder judged
 * live on that version before the claim's end, and still in flight (a slow heartbeat, a fenced
 * write), could commit after the refusal was answered: renewing a claim its holder was told is
 * lost, and letting its next fenced write land. True when there is nothing to mark or the mark
 * landed; false when the version changed meanwhile (judge again: the in-flight call won).
 */
export async function markLapsed(
  ctx: MongoContext,
  instanceId: string,
  doc: InstanceDoc | null,
  lapsed: ReadonlySet<string>,
  now: number,
): Promise<boolean> {
  if (doc === null || lapsed.size === 0) return true;
  return ctx.commit(instanceId, doc, { c: markedLapsed(doc.c ?? [], lapsed, now) });
}

// ---------------------------------------------------------------- claim-next: give back

/** A claim claim-next committed (or may have committed): its instance and entry. */
export interface Held {
  instanceId: string;
  entry: ClaimEntry;
}

/**
 * Gives back a claim claim-next took (or may have taken) and will not return. Matches on the
 * token, so giving back a claim that never landed, or that was taken over since, is a no-op.
 */
function giveBack(ctx: MongoContext, instanceId: string, taskId: string, token: number): Promise<void> {
  return retryOnRace(
    `giving back the claim on ${quote(instanceId)}/${quote(taskId)}`,
    async () => {
      const doc = await ctx.read(instanceId);
      if (doc === null || claimOn(doc, taskId)?.k !== token) return undefined;
      return (await removeClaim(ctx, instanceId, doc, taskId)) ? undefined : RETRY;
    },
    { ...RACE, attempts: 20 },
  );
}

/**
 * Gives back claims best-effort (a failure is retried a few times). Returns those that could
 * not be given back and never expire (no ttl): a claim with a ttl frees itself when it expires.
 */
export async function giveBackAll(
  ctx: MongoContext,
  held: readonly Held[],
): Promise<{ stuck: Held[]; error: unknown }> {
  const stuck: Held[] = [];
  let error: unknown;
  await Promise.all(
    held.map(async (claim) => {
      for (let attempt = 0; attempt < 3; attempt++) {
        // Not a race but a failure: wait a little longer each time before trying again.
        if (attempt > 0) await sleep(backoffDelay(attempt * 3, 1, 50));
        try {
          await giveBack(ctx, claim.instanceId, claim.entry.t, claim.entry.k);
          return;
        } catch (e) {
          error ??= e;
        }
      }
      if (claim.entry.e === null) stuck.push(claim);
    }),
  );
  return { stuck, error };
}
