import { createHash } from "node:crypto";
import {
  BackendError,
  type CompletionOutcome,
  decodeSnapshotHeader,
  ErrorCode,
  type Fence,
  isPersistenceError,
  type NextStep,
  type PersistenceError,
  positionTaskId,
  type ValidCompletion,
} from "@sayiir/persistence-core";
import {
  advanceHeader,
  RETRY,
  resultRefusal,
  retryOnRace,
  type StepWrite,
  type StoredClaimView,
  stepRefusal,
  type WriteView,
} from "@sayiir/persistence-core/adapter";
import type { Item } from "./completion.js";
import type { ShardContext } from "./context.js";
import { bytes, requestId, str, toArg } from "./replies.js";
import { STEP_FIELDS } from "./scripts/complete-steps.js";
import { Code, refusal, type ScriptArg } from "./scripts/index.js";
import { scheduleFields } from "./snapshots.js";

/*
 * completeTasks with `next`: one fenced write per workflow step. The header is the codec's, which
 * Lua cannot decode, so a group of steps (the whole batch on a standalone server, one shard's
 * steps on a cluster) is two scripts, as cancel, pause and resume are one read and one write:
 * loadSteps reads, per step, the header, finished flag, updatedAt, lastCompletedTaskId, the
 * task's claim, whether the next task has a result and the oldest pending event of the name to
 * consume (never an output) and Redis's time; the kit's stepRefusal judges each step and its
 * advanceHeader computes the new header and index fields; then completeSteps applies each step
 * only if the instance is still as read (same header by SHA-1, same answer about the next task's
 * result), after the fence and before the event check, and answers CHANGED otherwise: the kit's
 * retryOnRace reads those steps again. One request id per write: a second run of the same
 * script (a lost reply, sent again) finds its own tombstones and answers OK.
 */

/** What loadSteps read for one step. */
interface StepRead {
  /** null: no snapshot. */
  header: Uint8Array | null;
  finished: boolean;
  updatedAt: number;
  lastCompletedTaskId: string | null;
  claim: StoredClaimView;
  hadNext: boolean;
  oldest: number | undefined;
}

/** loadSteps answers this many values per step (then the time). */
const READ_WIDTH = 7;

/** One group's steps: read, judge, write; the steps that changed since their read again. */
export async function stepGroup(
  ctx: ShardContext,
  group: readonly Item[],
  outcomes: CompletionOutcome[],
): Promise<void> {
  let pending = group;
  await retryOnRace("completeTasks (steps)", async () => {
    const { reads, now } = await readSteps(ctx, pending);
    const planned: Planned[] = [];
    for (const [i, item] of pending.entries()) {
      const plan = planStep(ctx, item, reads[i] as StepRead, now);
      if ("fields" in plan) planned.push(plan);
      else outcomes[item.index] = plan;
    }
    if (planned.length === 0) return true;
    pending = await writeSteps(ctx, planned, outcomes);
    return pending.length === 0 ? true : RETRY;
  });
}

/** The next task advanceHeader asks hasResult about: the next position's task, unless it is the task itself. */
function nextTaskOf(c: ValidCompletion): string {
  const next = c.next as NextStep;
  if (next.kind === "Completed" || next.kind === "Failed") return "";
  const task = positionTaskId(next);
  return task === null || task === c.taskId ? "" : task;
}

async function readSteps(
  ctx: ShardContext,
  group: readonly Item[],
): Promise<{ reads: StepRead[]; now: number }> {
  const fields: string[] = [];
  for (const { c, shard } of group) {
    fields.push(String(shard), c.instanceId, c.taskId, nextTaskOf(c), c.consumeEvent?.eventName ?? "");
  }
  const first = group[0] as Item;
  const reply = (await ctx.call(
    "loadSteps",
    "completeTasks",
    [ctx.layout.ready(first.shard), ctx.layout.tagStart(), JSON.stringify(fields)],
    true,
  )) as Array<Buffer | null>;
  if (reply.length !== group.length * READ_WIDTH + 1) {
    throw new BackendError(
      `completeTasks: the read answered ${reply.length} values for ${group.length} steps`,
    );
  }
  const text = (i: number) => str(reply[i] as Buffer);
  const reads: StepRead[] = [];
  for (let i = 0; i < reply.length - 1; i += READ_WIDTH) {
    const header = reply[i];
    const seq = text(i + 6);
    const last = text(i + 3);
    reads.push({
      header: header === null || header === undefined ? null : bytes(header),
      finished: text(i + 1) === "1",
      updatedAt: Number(text(i + 2)),
      lastCompletedTaskId: last === "" ? null : last,
      claim: claimView(text(i + 4)),
      hadNext: text(i + 5) === "1",
      oldest: seq === "" ? undefined : Number(seq),
    });
  }
  return { reads, now: Number(text(reply.length - 1)) };
}

/** A claim field "token|claimedAt|expiresAt|requestId|workerId" as the kit's view (a tombstone: none). */
function claimView(field: string): StoredClaimView {
  const match = /^(\d+)\|\d+\|(\d*)\|/.exec(field);
  if (match === null) return undefined;
  return { token: Number(match[1]), expiresAt: match[2] === "" ? null : Number(match[2]) };
}

/** A step judged and computed: the write script's fields and byte arguments. */
interface Planned {
  item: Item;
  fields: string[];
  output: ScriptArg;
  header: ScriptArg;
  /** The initial input a header written before it had a field of its own carries. */
  legacyInput: Uint8Array | undefined;
}

/** The kit's checks on what was read, then the new header and fields (or the refusal). */
function planStep(ctx: ShardContext, item: Item, read: StepRead, now: number): Planned | PersistenceError {
  const c = item.c;
  const id = c.instanceId;
  const fence: Fence = { instanceId: id, taskId: c.taskId, token: c.token };
  const base: WriteView = { found: read.header !== null, finished: read.finished, claim: read.claim, now };
  const early = resultRefusal(id, fence, base);
  if (early !== null || read.header === null) return early ?? new BackendError("completeTasks: no header");
  const header = read.header;
  try {
    const probe = decodeSnapshotHeader(header, id, { results: [], lastCompletedTaskId: null });
    const state = probe.state;
    const view = {
      ...base,
      paused: state.kind === "Paused",
      positionTask: state.kind === "InProgress" ? positionTaskId(state.position) : null,
    };
    const refused = stepRefusal(id, fence, view, c.consumeEvent, read.oldest);
    if (refused !== null) return refused;
    const asked = nextTaskOf(c);
    const stored = {
      instanceId: id,
      header,
      lastCompletedTaskId: read.lastCompletedTaskId,
      hasResult: (taskId: string) => taskId === asked && read.hadNext,
    };
    const write = advanceHeader(stored, c.taskId, c.next as NextStep, Math.max(read.updatedAt, now));
    return {
      item,
      fields: stepFields(ctx, item, header, read.hadNext, write),
      output: toArg(c.output),
      header: toArg(write.header),
      legacyInput: probe.initialInput,
    };
  } catch (error) {
    if (isPersistenceError(error) && error.code !== ErrorCode.Backend) return error;
    throw error;
  }
}

/** completeSteps' fields of one step (see its comment); the last, the initial input's index, is set by writeSteps. */
function stepFields(
  ctx: ShardContext,
  item: Item,
  header: Uint8Array,
  hadNext: boolean,
  write: StepWrite,
): string[] {
  const c = item.c;
  const timeoutAt = write.awaiting?.timeoutAt ?? null;
  return [
    String(item.shard),
    c.instanceId,
    c.taskId,
    String(c.token),
    createHash("sha1").update(header).digest("hex"),
    nextTaskOf(c),
    hadNext ? "1" : "0",
    c.consumeEvent?.eventName ?? "",
    c.consumeEvent === undefined ? "" : String(c.consumeEvent.sequence),
    String(write.updatedAt),
    write.status,
    write.keepsResults ? "0" : "1",
    write.positionTaskId ?? "",
    write.keepsResults ? positionOf(c) : "",
    write.readyTaskId ?? "",
    write.awaiting?.eventName ?? "",
    write.awaiting?.nextTaskId ?? "",
    timeoutAt === null ? "" : String(timeoutAt),
    ...(write.keepsResults ? scheduleFields(write.schedule, ctx.agingMs) : ["", "", "", ""]),
    "",
  ];
}

/** The task of the next position (what cancel, pause and resume read as `k`). */
function positionOf(c: ValidCompletion): string {
  const next = c.next as NextStep;
  return next.kind === "Completed" || next.kind === "Failed" ? "" : (positionTaskId(next) ?? "");
}

/** One completeSteps script; each step's outcome goes to its place; answers the steps to read again. */
async function writeSteps(
  ctx: ShardContext,
  planned: readonly Planned[],
  outcomes: CompletionOutcome[],
): Promise<Item[]> {
  const first = planned[0] as Planned;
  const fields: string[] = [];
  const args: ScriptArg[] = [ctx.layout.ready(first.item.shard), ctx.layout.tagStart(), requestId(), ""];
  const inputs: ScriptArg[] = [];
  for (const plan of planned) {
    if (plan.legacyInput !== undefined) {
      // Its ARGV index: after the prefix, request id, fields and two byte arguments per step.
      plan.fields[plan.fields.length - 1] = String(4 + 2 * planned.length + inputs.length);
      inputs.push(toArg(plan.legacyInput));
    }
    if (plan.fields.length !== STEP_FIELDS) {
      throw new BackendError(`completeTasks: ${plan.fields.length} fields for a step, not ${STEP_FIELDS}`);
    }
    fields.push(...plan.fields);
    args.push(plan.output, plan.header);
  }
  args[3] = JSON.stringify(fields);
  args.push(...inputs);
  const reply = str((await ctx.call("completeSteps", "completeTasks", args)) as string).split(",");
  if (reply.length !== planned.length) {
    throw new BackendError(
      `completeTasks: the script answered ${reply.length} statuses for ${planned.length}`,
    );
  }
  const again: Item[] = [];
  for (const [i, { item }] of planned.entries()) {
    const code = Number(reply[i]);
    if (code === Code.changed) {
      again.push(item);
      continue;
    }
    const c = item.c;
    const outcome = refusal(code, {
      instanceId: c.instanceId,
      fence: c,
      ...(c.consumeEvent === undefined ? {} : { event: c.consumeEvent }),
    });
    if (outcome instanceof BackendError) throw outcome;
    outcomes[item.index] = outcome;
  }
  return again;
}
