import type { EventRef, Fence, WorkflowSnapshot } from "@sayiir/persistence-core";
import { positionTaskId } from "@sayiir/persistence-core";
import { type StoredSnapshot, toStoredSnapshot } from "@sayiir/persistence-core/adapter";
import type { ShardContext } from "./context.js";
import { attemptsField, DEFAULT_QUEUE, resultField } from "./layout.js";
import { encodeAttempts, requestId, toArg } from "./replies.js";
import { refusal, type ScriptArg } from "./scripts/index.js";

/*
 * saveSnapshot: the fields of the kit's toStoredSnapshot (header, status, index fields, initial
 * input, outputs) in one script, which also checks the fence and the stored state, consumes the
 * event the write names and places the instance in the ready, lease or timer set. The script
 * compares outputs and attempts with the stored ones and writes only those that changed.
 */

/** The task of the position of an InProgress or Paused snapshot (what cancel, pause and resume read). */
function positionTask(snapshot: WorkflowSnapshot): string | null {
  const state = snapshot.state;
  return state.kind === "InProgress" || state.kind === "Paused" ? positionTaskId(state.position) : null;
}

/**
 * Queue, priority and ready-set offset of a schedule, and its runAt, as script arguments: each
 * '' at its default, so a snapshot without a schedule writes none. The offset is (priority - 3) x
 * agingMs: the ready sets' order is effectiveTime's shifted by 2 x agingMs, so records written
 * before issue 16 (no fields: priority 3) sort right beside new ones.
 */
export function scheduleFields(schedule: StoredSnapshot["schedule"], agingMs: number): string[] {
  const { runAt, priority, queue } = schedule;
  return [
    queue === DEFAULT_QUEUE ? "" : queue,
    priority === 3 ? "" : String(priority),
    priority === 3 ? "" : String((priority - 3) * agingMs),
    runAt === null ? "" : String(runAt),
  ];
}

/**
 * The schedule fields of the script (queue, priority, offset, due, runAt). Due: never before the
 * position's runAt nor the retryAt of the position task's attempts, so the later of the two; 'h'
 * (held) when those attempts have retryAt null. The runAt is kept too: failTasks makes a retry
 * due at the later of it and the new retryAt.
 */
function scheduleArgs(stored: StoredSnapshot, task: string | null, agingMs: number): string[] {
  const runAt = stored.schedule.runAt;
  const attempts = task === null ? undefined : stored.attempts.find((a) => a.taskId === task);
  const retryAt = attempts?.retryAt;
  let due = runAt === null ? "" : String(runAt);
  if (retryAt === null) due = "h";
  else if (retryAt !== undefined) due = String(runAt === null ? retryAt : Math.max(runAt, retryAt));
  const [queue = "", priority = "", offset = "", runAtArg = ""] = scheduleFields(stored.schedule, agingMs);
  return [queue, priority, offset, due, runAtArg];
}

export async function saveSnapshot(
  ctx: ShardContext,
  snapshot: WorkflowSnapshot,
  fence: Fence | undefined,
  consume: EventRef | undefined,
): Promise<void> {
  const stored = toStoredSnapshot(snapshot);
  const id = stored.instanceId;
  const k = ctx.layout.instance(id);
  const timeoutAt = stored.awaiting?.timeoutAt ?? null;
  const args: ScriptArg[] = [
    k.meta,
    k.ready,
    k.ids,
    k.leased,
    k.timers,
    k.events,
    k.eventOrder,
    id,
    toArg(stored.header),
    stored.finished ? "1" : "0",
    stored.definitionHash,
    stored.positionTaskId ?? "",
    stored.lastCompletedTaskId ?? "",
    stored.readyTaskId ?? "",
    String(stored.updatedAt),
    stored.initialInput === null ? "0" : "1",
    toArg(stored.initialInput ?? ""),
    fence?.taskId ?? "",
    fence === undefined ? "" : String(fence.token),
    stored.status,
    positionTask(snapshot) ?? "",
    stored.awaiting?.eventName ?? "",
    stored.awaiting?.nextTaskId ?? "",
    timeoutAt === null ? "" : String(timeoutAt),
    consume?.eventName ?? "",
    consume === undefined ? "" : String(consume.sequence),
    consume === undefined ? "" : requestId(),
    ...scheduleArgs(stored, positionTask(snapshot), ctx.agingMs),
  ];
  for (const result of stored.results) args.push(resultField(result.taskId), toArg(result.output));
  for (const { taskId, ...attempts } of stored.attempts)
    args.push(attemptsField(taskId), encodeAttempts(attempts));
  const code = await ctx.call("saveSnapshot", "saveSnapshot", args);
  const error = refusal(Number(code), {
    instanceId: id,
    ...(fence === undefined ? {} : { fence }),
    ...(consume === undefined ? {} : { event: consume }),
  });
  if (error !== null) throw error;
}
