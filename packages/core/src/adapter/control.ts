import { decodeSnapshotHeader, encodeSnapshotHeader } from "../codec.js";
import {
  type ControlRequest,
  markCancelled,
  markPaused,
  markResumed,
  type WorkflowSnapshot,
} from "../snapshot.js";
import { type StoredSnapshot, toStoredSnapshot } from "./stored.js";

/** A control operation's state change. */
export type Transition = "cancel" | "pause" | "resume";

/** What an adapter reads, inside its atomic step, to change a workflow's state without loading outputs. */
export interface StoredHeaderView {
  instanceId: string;
  header: Uint8Array;
  /** The stored lastCompletedTaskId (kept beside the header). */
  lastCompletedTaskId: string | null;
  /** Does the instance hold a result for this task? (Decides readiness and the interrupted task.) */
  hasResult: (taskId: string) => boolean;
}

/**
 * What to store after cancel, pause or resume: the new header and the index fields of the new
 * state (status, finished, paused, readyTaskId, awaiting). The caller has checked the stored state
 * with controlRefusal; results, the initial input and claims are the adapter's (cancel revokes the
 * claims and drops the events in the same atomic step). Outputs are never read: the header is
 * decoded with placeholder results for the ids that `hasResult` confirms.
 */
export function transitionHeader(
  transition: Transition,
  stored: StoredHeaderView,
  request: Required<ControlRequest>,
  now: number,
): Pick<
  StoredSnapshot,
  "header" | "status" | "finished" | "paused" | "readyTaskId" | "awaiting" | "positionTaskId" | "updatedAt"
> {
  const before = decodeWithoutOutputs(stored);
  const after =
    transition === "cancel"
      ? markCancelled(before, request, now)
      : transition === "pause"
        ? markPaused(before, request, now)
        : markResumed(before, now);
  return storedState(after, now);
}

/** The header and the index fields of a state: what a write that changes the state stores. */
export type StoredState = Pick<
  StoredSnapshot,
  | "header"
  | "status"
  | "finished"
  | "paused"
  | "positionTaskId"
  | "readyTaskId"
  | "awaiting"
  | "lastCompletedTaskId"
  | "schedule"
  | "updatedAt"
>;

/** The header (without the initial input) and the index fields of a state written at `now`. */
export function storedState(after: WorkflowSnapshot, now: number): StoredState {
  const index = toStoredSnapshot(after);
  return {
    header: encodeSnapshotHeader(withoutInput(after)),
    status: index.status,
    finished: index.finished,
    paused: index.paused,
    positionTaskId: index.positionTaskId,
    readyTaskId: index.readyTaskId,
    awaiting: index.awaiting,
    lastCompletedTaskId: index.lastCompletedTaskId,
    schedule: index.schedule,
    updatedAt: now,
  };
}

const PLACEHOLDER = new Uint8Array(0);

/** The header's snapshot, with an empty result for every task of its position that has one. */
export function decodeWithoutOutputs(stored: StoredHeaderView): WorkflowSnapshot {
  const probe = decodeSnapshotHeader(stored.header, stored.instanceId, {
    results: [],
    lastCompletedTaskId: null,
  });
  const state = probe.state;
  const position = state.kind === "InProgress" || state.kind === "Paused" ? state.position : undefined;
  const candidates = new Set<string>();
  if (position?.kind === "AtTask") candidates.add(position.taskId);
  if (position?.kind === "AwaitingEvent") candidates.add(position.nextTaskId);
  if (stored.lastCompletedTaskId !== null) candidates.add(stored.lastCompletedTaskId);
  const results = [...candidates]
    .filter((taskId) => taskId === stored.lastCompletedTaskId || stored.hasResult(taskId))
    .map((taskId) => ({ taskId, output: PLACEHOLDER }));
  return decodeSnapshotHeader(stored.header, stored.instanceId, {
    results,
    lastCompletedTaskId: stored.lastCompletedTaskId,
  });
}

export function withoutInput(snapshot: WorkflowSnapshot): WorkflowSnapshot {
  const { initialInput: _, ...rest } = snapshot;
  return rest;
}
