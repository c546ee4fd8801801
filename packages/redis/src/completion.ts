import {
  BackendError,
  type CompletionOutcome,
  type ValidCompletion,
  type ValidFailure,
} from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import { groupByShard, requestId, str, toArg } from "./replies.js";
import { refusal } from "./scripts/index.js";

/*
 * completeTasks and failTasks: one script per call on a standalone server; on a cluster one
 * script per shard the batch touches, sent together. Each item is one atomic step inside its
 * script.
 */

interface Item<T = ValidCompletion> {
  c: T;
  /** Its place in the call's outcomes. */
  index: number;
  shard: number;
}

export function completeTasks(
  ctx: ShardContext,
  completions: readonly ValidCompletion[],
): Promise<CompletionOutcome[]> {
  return perShard(ctx, completions, completeGroup);
}

export function failTasks(
  ctx: ShardContext,
  failures: readonly ValidFailure[],
): Promise<CompletionOutcome[]> {
  return perShard(ctx, failures, failGroup);
}

/** One group's script: each item's refusal (or null) goes to its place in `outcomes`. */
type Group<T> = (
  ctx: ShardContext,
  group: readonly Item<T>[],
  outcomes: CompletionOutcome[],
) => Promise<void>;

async function perShard<T extends { instanceId: string }>(
  ctx: ShardContext,
  batch: readonly T[],
  run: Group<T>,
): Promise<CompletionOutcome[]> {
  const items = batch.map((c, index) => ({ c, index, shard: ctx.layout.shardOf(c.instanceId) }));
  const outcomes: CompletionOutcome[] = new Array(batch.length).fill(null);
  if (ctx.oneScript) {
    await run(ctx, items, outcomes);
    return outcomes;
  }
  const groups = [...groupByShard(items).values()];
  const settled = await Promise.allSettled(groups.map((group) => run(ctx, group, outcomes)));
  // Every script has answered (or failed) before the call does: nothing is still in flight
  // when a caller hears of a failure.
  for (const outcome of settled) if (outcome.status === "rejected") throw outcome.reason;
  return outcomes;
}

/** One completion script over `group`; each item's refusal (or null) goes to its place in `outcomes`. */
async function completeGroup(
  ctx: ShardContext,
  group: readonly Item[],
  outcomes: CompletionOutcome[],
): Promise<void> {
  const first = group[0] as Item;
  // The small fields travel as one JSON argument (each argument costs the driver and the
  // server), the outputs as bytes.
  const fields: string[] = [];
  const outputs: Buffer[] = [];
  for (const { c, shard } of group) {
    fields.push(String(shard), c.instanceId, c.taskId, String(c.token));
    outputs.push(toArg(c.output) as Buffer);
  }
  const reply = str(
    (await ctx.call("completeTasks", "completeTasks", [
      ctx.layout.ready(first.shard),
      ctx.layout.tagStart(),
      requestId(),
      JSON.stringify(fields),
      ...outputs,
    ])) as string,
  );
  settle("completeTasks", reply, group, outcomes);
}

/** One failTasks script over `group` (fields as JSON, error texts as arguments of their own). */
async function failGroup(
  ctx: ShardContext,
  group: readonly Item<ValidFailure>[],
  outcomes: CompletionOutcome[],
): Promise<void> {
  const first = group[0] as Item<ValidFailure>;
  const fields: string[] = [];
  const errors: string[] = [];
  for (const { c, shard } of group) {
    fields.push(
      String(shard),
      c.instanceId,
      c.taskId,
      String(c.token),
      c.retryAt === null ? "" : String(c.retryAt),
    );
    errors.push(c.error);
  }
  const reply = str(
    (await ctx.call("failTasks", "failTasks", [
      ctx.layout.ready(first.shard),
      ctx.layout.tagStart(),
      requestId(),
      JSON.stringify(fields),
      ...errors,
    ])) as string,
  );
  settle("failTasks", reply, group, outcomes);
}

/** One digit per item: its refusal (or null) goes to its place in `outcomes`. */
function settle(
  operation: string,
  reply: string,
  group: readonly Item<{ instanceId: string; taskId: string; token: number }>[],
  outcomes: CompletionOutcome[],
): void {
  if (reply.length !== group.length) {
    throw new BackendError(`${operation}: the script answered ${reply.length} statuses for ${group.length}`);
  }
  for (const [i, { c, index }] of group.entries()) {
    const outcome = refusal(reply.charCodeAt(i) - 48, { instanceId: c.instanceId, fence: c });
    if (outcome instanceof BackendError) throw outcome;
    outcomes[index] = outcome;
  }
}
