/*
 * Task results: saveTaskResult and completeTasks, the fenced writes of outputs, and failTasks
 * (the fenced record of failed runs). Each output is
 * written first as a new blob; then one compare-and-set of the instance document puts its
 * reference into `r` (and, for completeTasks, takes the claim out of `c`), judged on the version
 * it replaces, so the fence check and the write it guards are one atomic step.
 */
import {
  type CompletionOutcome,
  ErrorCode,
  type Fence,
  isPersistenceError,
  type PersistenceError,
  type ValidCompletion,
  type ValidFailure,
} from "@sayiir/persistence-core";
import { RETRY, resultRefusal, retryOnRace } from "@sayiir/persistence-core/adapter";
import { type Failing, failurePlan } from "./attempts.js";
import { digest, newBlobId } from "./chunks.js";
import { markLapsed } from "./claims.js";
import { type MongoContext, quote, RACE } from "./context.js";
import { readHeader, type StoredHeader } from "./control.js";
import { type Completing, completionPlan, lapsedClaims, withLapsed, writeView } from "./instance.js";
import { type InstanceDoc, isSnapshot, PROJECTION } from "./layout.js";
import { collectBlobs, prunedClaims } from "./maintenance.js";
import { PendingBlobs } from "./pending-blobs.js";
import { type Stepping, stepPlan } from "./step.js";

/**
 * saveTaskResult: read, judge (NotFound, the fence, finished), write the output blob, judge the
 * fence again on a fresh read (within one round trip of the commit), then the compare-and-set:
 * `r` gets the task's entry, `l = taskId`, `u = max(u, now)`.
 */
export async function saveTaskResult(
  ctx: MongoContext,
  instanceId: string,
  taskId: string,
  output: Uint8Array,
  fence: Fence | undefined,
): Promise<void> {
  const blobId = newBlobId();
  const hash = digest(output);
  const pending = new PendingBlobs();
  let written = false;
  try {
    await retryOnRace(
      `saveTaskResult: ${quote(instanceId)}`,
      async () => {
        const doc = await ctx.read(instanceId);
        const judged = fence === undefined ? 0 : await ctx.now();
        const refusal = resultRefusal(instanceId, fence, writeView(doc, fence, judged));
        if (refusal !== null) {
          // A refusal because the fence's claim expired is made durable first (see markLapsed).
          const lapsed =
            fence === undefined ? new Set<string>() : lapsedClaims(doc, [fence], [refusal], judged);
          if (!(await markLapsed(ctx, instanceId, doc, lapsed, judged))) return RETRY;
          throw refusal;
        }
        const current = doc as InstanceDoc;
        if (!written) {
          await ctx.chunks.write([{ instanceId, id: blobId, bytes: output }]);
          written = true;
          // Judge the fence again on a fresh read, within one round trip of the commit.
          if (fence !== undefined) return RETRY;
        }
        const previous = (current.r ?? []).find((e) => e.t === taskId);
        const r = (current.r ?? []).filter((e) => e.t !== taskId);
        r.push({ t: taskId, g: blobId, z: output.byteLength, x: hash });
        const now = await ctx.now();
        const u = Math.max(Number(current.u ?? 0), now);
        const c = prunedClaims(current, now);
        const changes = { r, l: taskId, u, ...(c === undefined ? {} : { c }) };
        if (!(await pending.commit([blobId], () => ctx.commit(instanceId, current, changes)))) return RETRY;
        if (previous !== undefined) await collectBlobs(ctx.chunks, [previous.g]);
        return undefined;
      },
      RACE,
    );
  } finally {
    if (written) await collectBlobs(ctx.chunks, pending.collectable([blobId]));
  }
}

/** The completions of a batch grouped by instance, each with the blob id its output gets. */
function groupByInstance(
  completions: readonly ValidCompletion[],
): Map<string, Array<Stepping & { index: number }>> {
  const groups = new Map<string, Array<Stepping & { index: number }>>();
  for (const [index, c] of completions.entries()) {
    const item: Stepping & { index: number } = {
      taskId: c.taskId,
      token: c.token,
      blobId: newBlobId(),
      size: c.output.byteLength,
      hash: digest(c.output),
      index,
    };
    if (c.next !== undefined) item.next = c.next;
    if (c.consumeEvent !== undefined) item.consumeEvent = c.consumeEvent;
    const group = groups.get(c.instanceId);
    if (group === undefined) groups.set(c.instanceId, [item]);
    else group.push(item);
  }
  return groups;
}

/**
 * completeTasks: every output goes to the outputs collection first (one insertMany for the
 * batch, while the instance documents are read with one find), then each instance commits ALL
 * its accepted completions (results in, claims out) in one compare-and-set of its document,
 * instances in parallel. The claims live in that document, so the fence checks and the write
 * they guard are one atomic step, and completions of one instance never overwrite each other.
 */
export async function completeTasks(
  ctx: MongoContext,
  completions: readonly ValidCompletion[],
): Promise<CompletionOutcome[]> {
  const outcomes: CompletionOutcome[] = completions.map(() => null);
  const groups = groupByInstance(completions);
  // A step to Completed or Failed keeps no results: its output is never stored.
  const blobs = [...groups].flatMap(([instanceId, items]) =>
    items
      .filter((item) => item.next?.kind !== "Completed" && item.next?.kind !== "Failed")
      .map((item) => ({
        instanceId,
        id: item.blobId,
        bytes: (completions[item.index] as ValidCompletion).output,
      })),
  );
  const pending = new PendingBlobs();
  const garbage: string[] = [];
  const written: string[] = [];
  // A step reads the header too (inline, in the same find; never an output).
  const steps = completions.some((c) => c.next !== undefined);
  const projection = steps ? PROJECTION.control : PROJECTION.state;
  try {
    const [read, wrote] = await Promise.allSettled([
      ctx.snapshots.find({ _id: { $in: [...groups.keys()] } }, { projection }).toArray(),
      ctx.chunks.write(blobs),
    ]);
    if (wrote.status === "rejected") throw wrote.reason;
    if (read.status === "rejected") throw read.reason;
    const docs = new Map(read.value.map((doc) => [doc._id, doc]));
    const settled = await Promise.allSettled(
      [...groups].map(async ([instanceId, items]) => {
        const first = docs.get(instanceId) ?? null;
        const done = items.some((item) => item.next !== undefined)
          ? await stepOn(ctx, instanceId, first, items, { pending, written })
          : await completeOn(ctx, instanceId, first, items, pending);
        for (const [k, outcome] of done.outcomes.entries())
          outcomes[(items[k] as { index: number }).index] = outcome;
        garbage.push(...done.replaced);
      }),
    );
    const failed = settled.find((s) => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    return outcomes;
  } finally {
    garbage.push(...pending.collectable([...blobs.map((blob) => blob.id), ...written]));
    // The commits are the commit points: failing to collect garbage changes no outcome.
    await collectBlobs(ctx.chunks, garbage);
  }
}

/**
 * The compare-and-set loop of one instance's completions, from the version `first` (read while
 * the outputs were written). Each attempt judges every completion at a clock reading taken
 * after the outputs are stored, so a claim is judged live within one round trip of the commit;
 * a lost compare-and-set re-reads and judges again. `pending` decides which blobs of a commit
 * that failed may be collected.
 */
function completeOn(
  ctx: MongoContext,
  instanceId: string,
  first: InstanceDoc | null,
  items: readonly Completing[],
  pending: PendingBlobs,
): Promise<{ outcomes: CompletionOutcome[]; replaced: string[] }> {
  return retryOnRace(
    `completeTasks: ${quote(instanceId)}`,
    async (attempt) => {
      const doc = attempt === 0 ? first : await ctx.read(instanceId);
      const now = await ctx.now();
      const plan = completionPlan(instanceId, doc, items, now);
      // Refusals because a claim expired are made durable by this commit (see markLapsed).
      const lapsed = lapsedClaims(doc, items, plan.outcomes, now);
      if (plan.changes === undefined) {
        if (!(await markLapsed(ctx, instanceId, doc, lapsed, now))) return RETRY;
        return { outcomes: plan.outcomes, replaced: [] };
      }
      const changes = withLapsed(plan.changes, doc, lapsed, now);
      const accepted = items.filter((_, k) => plan.outcomes[k] === null).map((item) => item.blobId);
      if (await pending.commit(accepted, () => ctx.commit(instanceId, doc, changes))) {
        return { outcomes: plan.outcomes, replaced: plan.replaced };
      }
      return RETRY;
    },
    RACE,
  );
}

/**
 * The compare-and-set loop of one instance's completions when one of them has `next` (one write
 * per step): the document is read with its header (the header's blob too when it has one; never
 * an output), the completions are judged and folded by stepPlan at a clock reading taken after
 * the outputs are stored, and one compare-and-set commits them. A header over the inline budget
 * is written as a new blob first (`blobs.written`). A lost compare-and-set re-reads and judges
 * again.
 */
function stepOn(
  ctx: MongoContext,
  instanceId: string,
  first: InstanceDoc | null,
  items: readonly Stepping[],
  blobs: { pending: PendingBlobs; written: string[] },
): Promise<{ outcomes: CompletionOutcome[]; replaced: string[] }> {
  let previousVersion: string | undefined;
  return retryOnRace(
    `completeTasks: ${quote(instanceId)}`,
    async (attempt) => {
      const doc = attempt === 0 ? first : await ctx.read(instanceId, PROJECTION.control);
      let stored: StoredHeader | PersistenceError | undefined;
      if (isSnapshot(doc)) {
        stored = await readHeader(ctx, doc).catch((error: unknown) => {
          if (isPersistenceError(error) && error.code !== ErrorCode.Backend) return error;
          throw error;
        });
        if (stored === undefined) {
          // Its header blob was replaced meanwhile: re-read. The same version twice is damage.
          if (doc.v !== previousVersion) {
            previousVersion = doc.v;
            return RETRY;
          }
        }
      }
      const now = await ctx.now();
      const plan = stepPlan(instanceId, doc, stored, items, now);
      // Refusals because a claim expired are made durable by this commit (see markLapsed).
      const lapsed = lapsedClaims(doc, items, plan.outcomes, now);
      if (plan.commit === undefined) {
        if (!(await markLapsed(ctx, instanceId, doc, lapsed, now))) return RETRY;
        return { outcomes: plan.outcomes, replaced: [] };
      }
      const ids = plan.blobs.map((b) => b.id);
      if (ids.length > 0) {
        blobs.written.push(...ids);
        await ctx.chunks.write(plan.blobs.map((b) => ({ instanceId, ...b })));
      }
      const { remove, events } = plan.commit;
      const fields = withLapsed(plan.commit.fields, doc, lapsed, now);
      const commit = () => ctx.commit(instanceId, doc, fields, remove, events);
      if (await blobs.pending.commit([...plan.kept, ...ids], commit)) {
        return { outcomes: plan.outcomes, replaced: plan.garbage };
      }
      return RETRY;
    },
    RACE,
  );
}

/**
 * failTasks: the instance documents are read with one find; then each instance commits ALL its
 * accepted failures in one compare-and-set of its document (instances in parallel): attempts
 * count + 1 with the error, the store's now and retryAt; claims out; the index fields recomputed
 * (the timer index at retryAt, or none when retryAt is null). The header is not rewritten.
 */
export async function failTasks(
  ctx: MongoContext,
  failures: readonly ValidFailure[],
): Promise<CompletionOutcome[]> {
  const outcomes: CompletionOutcome[] = failures.map(() => null);
  const groups = new Map<string, Array<Failing & { index: number }>>();
  for (const [index, f] of failures.entries()) {
    const item = {
      taskId: f.taskId,
      workerId: f.workerId,
      token: f.token,
      error: f.error,
      retryAt: f.retryAt,
      index,
    };
    const group = groups.get(f.instanceId);
    if (group === undefined) groups.set(f.instanceId, [item]);
    else group.push(item);
  }
  const docs = new Map(
    (
      await ctx.snapshots
        .find({ _id: { $in: [...groups.keys()] } }, { projection: PROJECTION.state })
        .toArray()
    ).map((doc) => [doc._id, doc]),
  );
  const settled = await Promise.allSettled(
    [...groups].map(async ([instanceId, items]) => {
      const done = await failOn(ctx, instanceId, docs.get(instanceId) ?? null, items);
      for (const [k, outcome] of done.entries()) outcomes[(items[k] as { index: number }).index] = outcome;
    }),
  );
  const failed = settled.find((s) => s.status === "rejected");
  if (failed !== undefined) throw failed.reason;
  return outcomes;
}

/** The compare-and-set loop of one instance's failures, from the version `first`. */
function failOn(
  ctx: MongoContext,
  instanceId: string,
  first: InstanceDoc | null,
  items: readonly Failing[],
): Promise<CompletionOutcome[]> {
  return retryOnRace(
    `failTasks: ${quote(instanceId)}`,
    async (attempt) => {
      const doc = attempt === 0 ? first : await ctx.read(instanceId);
      const now = await ctx.now();
      const plan = failurePlan(instanceId, doc, items, now);
      // Refusals because a claim expired are made durable by this commit (see markLapsed).
      const lapsed = lapsedClaims(doc, items, plan.outcomes, now);
      if (plan.changes === undefined)
        return (await markLapsed(ctx, instanceId, doc, lapsed, now)) ? plan.outcomes : RETRY;
      return (await ctx.commit(instanceId, doc, withLapsed(plan.changes, doc, lapsed, now)))
        ? plan.outcomes
        : RETRY;
    },
    RACE,
  );
}
