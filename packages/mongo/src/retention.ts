/*
 * Operating a store: purgeFinished (over the finish index), loadTaskResult (one output, never the
 * snapshot) and loadTaskClaims (the claims array of the instance document). The finish time `fa`
 * itself is stamped by the commit that first makes a snapshot finished (context.ts, finishChange
 * in instance.ts); the finish index is created by migrate (schema.ts).
 */
import { compareIds, failures, SerializationError, type TaskClaim } from "@sayiir/persistence-core";
import { RETRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { type MongoContext, quote, RACE } from "./context.js";
import { eventBlobsOf, toTaskClaim } from "./instance.js";
import { type InstanceDoc, isSnapshot, PROJECTION } from "./layout.js";
import { collectBlobs } from "./maintenance.js";
import { blobsOf } from "./snapshots.js";

/** Conditional deletes of one purge sent at once (each is its own round trip). */
const DELETES_IN_FLIGHT = 16;

/**
 * One task's output as loadSnapshot shows it. The read projects the state fields and, with
 * `$elemMatch`, only the one results entry of that task (never the header, the initial input,
 * the other entries or any other output), then reads that one blob. A Completed or Failed
 * snapshot shows no results (a document of an older release without `s` that is finished is one
 * of them). If a writer replaced the output (and collected its blob) between the two reads, read
 * again; the same version twice with the blob missing is damage.
 */
export async function loadTaskResult(
  ctx: MongoContext,
  instanceId: string,
  taskId: string,
): Promise<Uint8Array | null> {
  // $elemMatch, not the positional `r.$`: mongo-java-server 1.47 answers `r.$` with the first
  // entry of the array whatever the filter matched; MongoDB and the stand-in agree on $elemMatch.
  const projection = { _id: 1, v: 1, d: 1, f: 1, s: 1, r: { $elemMatch: { t: taskId } } };
  let previousVersion: string | undefined;
  return retryOnRace(
    `loadTaskResult: ${quote(instanceId)}`,
    async () => {
      const doc = await ctx.read(instanceId, projection);
      if (!isSnapshot(doc)) throw failures.snapshotNotFound(instanceId);
      if (doc.f === true && doc.s !== "Cancelled") return null;
      const entry = (doc.r ?? []).find((e) => e.t === taskId);
      if (entry === undefined) return null;
      // A fresh buffer joined from the chunks: the caller's own.
      const bytes = (await ctx.chunks.read([entry.g])).get(entry.g);
      if (bytes !== undefined) return bytes;
      if (doc.v === previousVersion) {
        throw new SerializationError(
          `snapshot ${quote(instanceId)} refers to a task output that is not stored (${quote(taskId)})`,
        );
      }
      previousVersion = doc.v;
      return RETRY;
    },
    { ...RACE, attempts: 50 },
  );
}

/**
 * The claims of an instance that are neither released (a release removes the entry) nor revoked
 * (a cancel marks it with `x`), live or expired, by task id in code-unit order. They live only in
 * the `c` array of the instance document (a claims-only placeholder too); no document: none.
 */
export async function loadTaskClaims(ctx: MongoContext, instanceId: string): Promise<TaskClaim[]> {
  const doc = await ctx.read(instanceId, PROJECTION.claims);
  return (doc?.c ?? [])
    .filter((entry) => entry.x === undefined)
    .sort((a, b) => compareIds(a.t, b.t))
    .map((entry) => toTaskClaim(instanceId, entry));
}

/**
 * Deletes up to `limit` snapshots that finished before `finishedBefore`, oldest finish first.
 * Rounds: pick the oldest still there from the finish index (`fa` by instance id: only finished
 * snapshots have `fa`, so unfinished ones are never read), then delete each with a conditional
 * delete that only one purger (or deleteSnapshot) can win; only the deletes won are counted. A
 * round whose picks all went to other purgers ends the call (they are draining the same range).
 */
export async function purgeFinished(
  ctx: MongoContext,
  finishedBefore: number,
  limit: number,
): Promise<number> {
  let deleted = 0;
  while (deleted < limit) {
    const picked = await ctx.snapshots
      .find({ fa: { $exists: true, $lt: finishedBefore } }, { projection: PROJECTION.id })
      .sort({ fa: 1, _id: 1 })
      .limit(limit - deleted)
      .toArray();
    if (picked.length === 0) break;
    const won = await deleteFinished(
      ctx,
      picked.map((doc) => doc._id),
      finishedBefore,
    );
    if (won === 0) break;
    deleted += won;
  }
  return deleted;
}

/**
 * Deletes each picked snapshot as deleteSnapshot does: one findOneAndDelete of the instance
 * document, still finished before the cut-off (so a snapshot deleted and created again since,
 * not finished or finished later, is left alone), with its claims and pending events inside it;
 * then the blobs it referred to (outputs, header, initial input, event payloads). The fencing
 * tokens come from the global counter, untouched, so a later claim of the id gets a larger one.
 * Returns how many of the deletes this call won.
 */
async function deleteFinished(
  ctx: MongoContext,
  ids: readonly string[],
  finishedBefore: number,
): Promise<number> {
  let won = 0;
  for (let i = 0; i < ids.length; i += DELETES_IN_FLIGHT) {
    const outcomes = await Promise.allSettled(
      ids
        .slice(i, i + DELETES_IN_FLIGHT)
        .map((_id) =>
          ctx.snapshots.findOneAndDelete(
            { _id, fa: { $lt: finishedBefore } },
            { projection: PROJECTION.blobs },
          ),
        ),
    );
    const gone: InstanceDoc[] = [];
    for (const outcome of outcomes) {
      if (outcome.status === "fulfilled" && outcome.value !== null) gone.push(outcome.value);
    }
    won += gone.length;
    // The deletes are the commit points: a failed sweep leaves garbage, never a wrong count. The
    // blobs of the deletes that landed are swept even when another delete of the batch failed.
    await collectBlobs(
      ctx.chunks,
      gone.flatMap((doc) => [...blobsOf(doc), ...eventBlobsOf(doc)]),
    );
    const failed = outcomes.find((outcome) => outcome.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }
  return won;
}
