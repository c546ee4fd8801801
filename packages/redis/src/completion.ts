import {
  BackendError,
  type CompletionOutcome,
  type ValidCompletion,
  type ValidFailure,
} from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import { groupByShard, requestId, str, toArg } from "./replies.js";
import { refusal } from "./scripts/index.js";
import { stepGroup } from "./step.js";

/*
 * completeTasks and failTasks: one script per call on a standalone server; on a cluster one
 * script per shard the batch touches, sent together. Each item is one atomic step inside its
 * script. Completions with `next` (workflow steps) go to step.ts: a read and a write per group,
 * sent beside the script of the plain completions.
 */

export interface Item<T = ValidCompletion> {
  c: T;
  /** Its place in the call's outcomes. */
  index: number;
  shard: number;
}

export async function completeTasks(
  ctx: ShardContext,
  completions: readonly ValidCompletion[],
): Promise<CompletionOutcome[]> {
  const outcomes: CompletionOutcome[] = new Array(completions.length).fill(null);
  for (const run of orderedRuns(completions)) {
    const plain: Item[] = [];
    const steps: Item[] = [];
    for (const index of run) {
      const c = completions[index] as ValidCompletion;
      (c.next === undefined ? plain : steps).push({ c, index, shard: ctx.layout.shardOf(c.instanceId) });
    }
    await settleAll([
      ...(plain.length === 0 ? [] : groups(ctx, plain).map((g) => completeGroup(ctx, g, outcomes))),
      ...(steps.length === 0 ? [] : groups(ctx, steps).map((g) => stepGroup(ctx, g, outcomes))),
    ]);
  }
  return outcomes;
}

/**
 * The call's items in runs that may be sent together: plain completions and steps go to different
 * scripts, so an instance that has both in one call is split where the kind changes, and the
 * runs are applied one after the other (call order, as every backend keeps). Without such an
 * instance, one run: the two scripts are sent side by side.
 */
function orderedRuns(completions: readonly ValidCompletion[]): number[][] {
  const runs: number[][] = [[]];
  const kindIn = new Map<string, boolean>(); // instance -> is a step, within the current run
  for (const [index, c] of completions.entries()) {
    const step = c.next !== undefined;
    const seen = kindIn.get(c.instanceId);
    if (seen !== undefined && seen !== step) {
      runs.push([]);
      kindIn.clear();
    }
    kindIn.set(c.instanceId, step);
    (runs[runs.length - 1] as number[]).push(index);
  }
  return runs;
}

export async function failTasks(
  ctx: ShardContext,
  failures: readonly ValidFailure[],
): Promise<CompletionOutcome[]> {
  const outcomes: CompletionOutcome[] = new Array(failures.length).fill(null);
  const items = failures.map((c, index) => ({ c, index, shard: ctx.layout.shardOf(c.instanceId) }));
  await settleAll(groups(ctx, items).map((g) => failGroup(ctx, g, outcomes)));
  return outcomes;
}

/** The items of one script each: all of them when one script may cover every shard, else one group per shard. */
function groups<T extends { shard: number }>(ctx: ShardContext, items: T[]): T[][] {
  return ctx.oneScript ? [items] : [...groupByShard(items).values()];
}

/**
 * Every script has answered (or failed) before the call does: nothing is still in flight when a
 * caller hears of a failure.
 */
async function settleAll(runs: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled(runs);
  for (const outcome of settled) if (outcome.status === "rejected") throw outcome.reason;
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
