import {
  BackendError,
  type EventRef,
  type Fence,
  failures,
  type PersistenceError,
} from "@sayiir/persistence-core";

/*
 * Result codes of the scripts, shared by the Lua side (LUA_CODES: a local per code) and the
 * TypeScript side (refusal: the core's failure for each code). A refusal is judged inside the
 * script, where it is atomic with the write; its wording is the core's, like every adapter's.
 * Completion answers one digit per item, so the codes it answers (0 to 3) are single digits.
 */
export const Code = {
  ok: 0,
  /** The fence is not the live claim on its task (ClaimLost). */
  fenceRejected: 1,
  /** The workflow is finished: its task results are final (Conflict). */
  resultsFinal: 2,
  /** No snapshot (NotFound). */
  snapshotNotFound: 3,
  /** The holder's claim has expired and is not revived (ClaimLost). */
  claimExpired: 4,
  /** No claim record on the task (NotFound). */
  claimNotFound: 5,
  /** The claim is another worker's (ClaimLost). */
  claimedByOther: 6,
  /** A finished workflow cannot go back to InProgress (Conflict). */
  cannotReopen: 7,
  /** A paused workflow may only be written Paused or Cancelled (Conflict: resume it first). */
  pausedCannotMove: 8,
  /** The event to consume is not the oldest pending event of its name (Conflict). */
  eventNotPending: 9,
  /** Cancel, pause, resume: the instance changed since it was read; read it again (no failure). */
  changed: 10,
  /** sendEvent: the workflow is Completed, Failed or Cancelled (Conflict). */
  eventsClosed: 11,
  /** saveSnapshot: a cancelled workflow may only be written Cancelled: a cancel is final (Conflict). */
  cancelledIsFinal: 12,
  /** extendTaskClaim: the workflow is cancelled, the claim's heartbeat fails (ClaimLost). */
  claimRevoked: 13,
} as const;

export type CodeName = keyof typeof Code;

/** `fenceRejected` -> `FENCE_REJECTED`. */
const luaName = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

/**
 * The codes as Lua locals (`OK`, `FENCE_REJECTED`, ...), at the start of every script that answers
 * one. They are strings (one digit for those completion answers): completion concatenates them
 * into its reply, and a number would be formatted on every item.
 */
export const LUA_CODES = `
local ${Object.keys(Code).map(luaName).join(", ")} = ${Object.values(Code)
  .map((code) => `'${code}'`)
  .join(", ")}
`;

/** What a code is about: the instance, and the task, fence, event or stored status of the call. */
export interface CodeSubject {
  instanceId: string;
  taskId?: string;
  fence?: Pick<Fence, "taskId" | "token">;
  /** The event a saveSnapshot consumes (eventNotPending). */
  event?: EventRef;
  /** The stored status a sendEvent was refused for (eventsClosed). */
  status?: string;
}

/**
 * The core's failure for a script's result code (null for OK). An unknown code, or one that does
 * not fit the call, is a BackendError: the script and this package do not agree.
 */
export function refusal(code: number, on: CodeSubject): PersistenceError | null {
  const { instanceId, taskId, fence, event, status } = on;
  switch (code) {
    case Code.ok:
      return null;
    case Code.snapshotNotFound:
      return failures.snapshotNotFound(instanceId);
    case Code.resultsFinal:
      return failures.resultsFinal(instanceId);
    case Code.cannotReopen:
      return failures.cannotReopen(instanceId);
    case Code.cancelledIsFinal:
      return failures.cancelledIsFinal(instanceId);
    case Code.pausedCannotMove:
      return failures.pausedCannotMove(instanceId);
    case Code.eventNotPending:
      if (event !== undefined) return failures.eventNotPending(instanceId, event);
      break;
    case Code.eventsClosed:
      if (status !== undefined) return failures.eventsClosed(instanceId, status);
      break;
    case Code.fenceRejected:
      if (fence !== undefined) return failures.fenceRejected(instanceId, fence);
      break;
    case Code.claimNotFound:
      if (taskId !== undefined) return failures.claimNotFound(instanceId, taskId);
      break;
    case Code.claimedByOther:
      if (taskId !== undefined) return failures.claimedByOther(instanceId, taskId);
      break;
    case Code.claimExpired:
      if (taskId !== undefined) return failures.claimExpired(instanceId, taskId);
      break;
    case Code.claimRevoked:
      if (taskId !== undefined) return failures.claimRevoked(instanceId, taskId);
      break;
  }
  return new BackendError(`unexpected script status ${code} for ${JSON.stringify(instanceId)}`);
}
