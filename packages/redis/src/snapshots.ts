import type { EventRef, Fence, WorkflowSnapshot } from "@sayiir/persistence-core";
import { positionTaskId } from "@sayiir/persistence-core";
import { toStoredSnapshot } from "@sayiir/persistence-core/adapter";
import type { ShardContext } from "./context.js";
import { resultField } from "./layout.js";
import { requestId, toArg } from "./replies.js";
import { refusal, type ScriptArg } from "./scripts/index.js";

/*
 * saveSnapshot: the fields of the kit's toStoredSnapshot (header, status, index fields, initial
 * input, outputs) in one script, which also checks the fence and the stored state, consumes the
 * event the write names and places the instance in the ready, lease or timer set.
 */

/** The task of the position of an InProgress or Paused snapshot (what cancel, pause and resume read). */
function positionTask(snapshot: WorkflowSnapshot): string | null {
  const state = snapshot.state;
  return state.kind === "InProgress" || state.kind === "Paused" ? positionTaskId(state.position) : null;
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
  ];
  for (const result of stored.results) args.push(resultField(result.taskId), toArg(result.output));
  const code = await ctx.call("saveSnapshot", "saveSnapshot", args);
  const error = refusal(Number(code), {
    instanceId: id,
    ...(fence === undefined ? {} : { fence }),
    ...(consume === undefined ? {} : { event: consume }),
  });
  if (error !== null) throw error;
}
