import { BackendError, type ControlRequest, decodeSnapshotHeader } from "@sayiir/persistence-core";
import {
  controlRefusal,
  RETRY,
  retryOnRace,
  type StoredStatus,
  type Transition,
  transitionHeader,
} from "@sayiir/persistence-core/adapter";
import type { ShardContext } from "./context.js";
import type { InstanceKeys } from "./layout.js";
import { bytes, requestId, str, toArg } from "./replies.js";
import { Code, refusal, type ScriptArg, type ScriptName } from "./scripts/index.js";

/*
 * cancelWorkflow, pauseWorkflow, resumeWorkflow. The header is the codec's, which Lua cannot
 * decode, so each is a read (loadHeader: header, lastCompletedTaskId, the position's task and
 * whether it has a result, Redis's time), the state check and the new header in TypeScript
 * (the kit's controlRefusal and transitionHeader), then one script that applies it only if the
 * instance is still as read, and answers CHANGED otherwise: the kit's retryOnRace reads again.
 * One request id per call: a second run of the same script (a client that re-sends after a
 * lost reply) answers OK instead of CHANGED.
 */

const SCRIPT: Record<Transition, ScriptName> = {
  cancel: "cancelWorkflow",
  pause: "pauseWorkflow",
  resume: "resumeWorkflow",
};

/** The keys each script declares (see its comment). */
function scriptKeys(transition: Transition, k: InstanceKeys): string[] {
  if (transition === "cancel") return [k.meta, k.ready, k.leased, k.timers, k.events, k.eventOrder];
  if (transition === "pause") return [k.meta, k.ready, k.leased, k.timers];
  return [k.meta, k.ready, k.leased, k.timers, k.eventOrder];
}

/** What loadHeader read. */
interface HeaderView {
  header: Uint8Array;
  status: StoredStatus;
  lastCompletedTaskId: string | null;
  /** The position's task ("" = none) and whether it has a result. */
  task: string;
  hadResult: boolean;
  /** The initial input carried by a header written before it had a field of its own, if that field is missing. */
  legacyInput: Uint8Array | undefined;
  now: number;
}

function headerView(reply: Buffer[], instanceId: string): HeaderView {
  const header = bytes(reply[0] as Buffer);
  const lastCompletedTaskId = str(reply[1] as Buffer);
  const probe = decodeSnapshotHeader(header, instanceId, { results: [], lastCompletedTaskId: null });
  return {
    header,
    status: probe.state.kind,
    lastCompletedTaskId: lastCompletedTaskId === "" ? null : lastCompletedTaskId,
    task: str(reply[2] as Buffer),
    hadResult: str(reply[3] as Buffer) === "1",
    legacyInput: str(reply[4] as Buffer) === "1" ? undefined : probe.initialInput,
    now: Number(str(reply[5] as Buffer)),
  };
}

/** One control operation: read, check, compute, apply if unchanged; again while it changes. */
export async function changeWorkflow(
  ctx: ShardContext,
  transition: Transition,
  instanceId: string,
  request: Required<ControlRequest>,
): Promise<void> {
  const operation = SCRIPT[transition];
  const k = ctx.layout.instance(instanceId);
  const keys = scriptKeys(transition, k);
  const req = requestId();
  await retryOnRace(`${operation} of ${JSON.stringify(instanceId)}`, async () => {
    const reply = (await ctx.call("loadHeader", operation, [k.meta], true)) as Buffer[] | null;
    const view = reply === null ? undefined : headerView(reply, instanceId);
    const refused = controlRefusal(transition, instanceId, view?.status);
    if (refused !== null) throw refused;
    if (view === undefined) throw new BackendError(`${operation}: no state read`);
    const next = transitionHeader(
      transition,
      {
        instanceId,
        header: view.header,
        lastCompletedTaskId: view.lastCompletedTaskId,
        hasResult: (taskId) => taskId === view.task && view.hadResult,
      },
      request,
      view.now,
    );
    const timeoutAt = next.awaiting?.timeoutAt ?? null;
    const args: ScriptArg[] = [
      ...keys,
      instanceId,
      req,
      toArg(view.header),
      view.lastCompletedTaskId ?? "",
      view.task,
      view.hadResult ? "1" : "0",
      toArg(next.header),
      String(next.updatedAt),
      next.status,
      next.finished ? "1" : "0",
      next.positionTaskId ?? "",
      next.awaiting?.eventName ?? "",
      next.awaiting?.nextTaskId ?? "",
      timeoutAt === null ? "" : String(timeoutAt),
      view.legacyInput === undefined ? "0" : "1",
      toArg(view.legacyInput ?? ""),
    ];
    const code = Number(await ctx.call(SCRIPT[transition], operation, args));
    if (code === Code.changed) return RETRY;
    const error = refusal(code, { instanceId });
    if (error !== null) throw error;
    return true;
  });
}
