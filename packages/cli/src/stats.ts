import {
  awaitedTaskId,
  isClaimLive,
  readyTaskId,
  scheduleOf,
  type WorkflowState,
} from "@sayiir/persistence-core";
import type { WorkflowView } from "./workflow.js";

/** Tasks of one queue by where they stand. */
export interface QueueStats {
  /** May run now: due, unclaimed (or held by an expired claim), workflow InProgress. */
  ready: number;
  /** Due later: a future runAt, retryAt or event timeout. */
  scheduled: number;
  /** Held by a live claim. */
  claimed: number;
  /** Waiting for an event that has not come, with no timeout. */
  waiting: number;
  /** Failed and not rescheduled (retryAt null): held until the runtime moves the workflow. */
  held: number;
  /** When the longest-ready task of the queue became ready (epoch ms), or null. */
  oldestReadyAt: number | null;
}

export interface StuckClaim {
  instanceId: string;
  taskId: string;
  workerId: string;
  token: number;
  expiresAt: number;
}

export interface PausedWorkflow {
  instanceId: string;
  reason: string | null;
  requestedBy: string | null;
  pausedAt: number;
}

/** What `inspect` reports: the sums over every workflow of the store. */
export interface StoreStats {
  workflows: number;
  states: Record<WorkflowState["kind"], number>;
  queues: Record<string, QueueStats>;
  oldestReady: { instanceId: string; taskId: string; queue: string; readyAt: number } | null;
  /** Expired claims not yet taken over, by how long ago they expired (first 50 listed). */
  stuck: { count: number; claims: StuckClaim[] };
  paused: { count: number; workflows: PausedWorkflow[] };
  pendingEvents: { count: number; workflows: number };
}

const LISTED = 50;

export function emptyStats(): StoreStats {
  return {
    workflows: 0,
    states: { InProgress: 0, Paused: 0, Completed: 0, Failed: 0, Cancelled: 0 },
    queues: {},
    oldestReady: null,
    stuck: { count: 0, claims: [] },
    paused: { count: 0, workflows: [] },
    pendingEvents: { count: 0, workflows: 0 },
  };
}

function queueOf(stats: StoreStats, name: string): QueueStats {
  let queue = stats.queues[name];
  if (queue === undefined) {
    queue = { ready: 0, scheduled: 0, claimed: 0, waiting: 0, held: 0, oldestReadyAt: null };
    stats.queues[name] = queue;
  }
  return queue;
}

/**
 * Where the task of an InProgress workflow stands: ready since when, scheduled, waiting or held.
 * Mirrors discovery: a due runAt / retryAt, an event (or a passed timeout) for an event wait.
 * "Ready since" is the latest of those times, else the last write (updatedAt): an estimate, as
 * stores do not all expose when a task entered their ready index.
 */
function taskStanding(
  view: WorkflowView,
  taskId: string,
  now: number,
): { kind: "ready"; since: number } | { kind: "scheduled" | "waiting" | "held" } {
  const { snapshot, events } = view;
  const state = snapshot.state as Extract<WorkflowState, { kind: "InProgress" }>;
  const attempts = snapshot.attempts?.[taskId];
  if (attempts?.retryAt === null) return { kind: "held" };
  let due = Math.max(attempts?.retryAt ?? 0, 0);
  const position = state.position;
  if (position.kind === "AtTask") {
    due = Math.max(due, position.runAt ?? 0);
  } else if (position.kind === "AwaitingEvent") {
    const event = events.find((e) => e.eventName === position.eventName);
    if (event !== undefined) due = Math.max(due, event.sentAt);
    else if (position.timeoutAt === null) return { kind: "waiting" };
    else due = Math.max(due, position.timeoutAt);
  }
  if (due > now) return { kind: "scheduled" };
  return { kind: "ready", since: due > 0 ? due : snapshot.updatedAt };
}

/** Adds one workflow to the sums. `now` is this process's clock (see the README on clocks). */
export function addWorkflow(stats: StoreStats, view: WorkflowView, now: number): void {
  const { snapshot, claims, events } = view;
  const state = snapshot.state;
  stats.workflows++;
  stats.states[state.kind]++;
  if (events.length > 0) {
    stats.pendingEvents.count += events.length;
    stats.pendingEvents.workflows++;
  }
  for (const claim of claims) {
    if (isClaimLive(claim, now)) continue;
    stats.stuck.count++;
    if (stats.stuck.claims.length < LISTED) {
      const { instanceId, taskId, workerId, token } = claim;
      stats.stuck.claims.push({ instanceId, taskId, workerId, token, expiresAt: claim.expiresAt as number });
    }
  }
  if (state.kind === "Paused") {
    stats.paused.count++;
    if (stats.paused.workflows.length < LISTED) {
      const { reason, requestedBy, pausedAt } = state;
      stats.paused.workflows.push({ instanceId: snapshot.instanceId, reason, requestedBy, pausedAt });
    }
  }
  if (state.kind !== "InProgress" && state.kind !== "Paused") return;
  const queue = queueOf(stats, scheduleOf(state.position).queue);
  const live = claims.filter((c) => isClaimLive(c, now));
  queue.claimed += live.length;
  if (state.kind === "Paused") return;
  const taskId = readyTaskId(snapshot) ?? awaitedTaskId(snapshot);
  if (taskId === undefined || live.some((c) => c.taskId === taskId)) return;
  const standing = taskStanding(view, taskId, now);
  if (standing.kind !== "ready") {
    queue[standing.kind]++;
    return;
  }
  // A task held by an expired claim is ready for takeover since the claim expired.
  const expired = claims.find((c) => c.taskId === taskId);
  const since = Math.max(standing.since, expired?.expiresAt ?? 0);
  queue.ready++;
  if (queue.oldestReadyAt === null || since < queue.oldestReadyAt) queue.oldestReadyAt = since;
  if (stats.oldestReady === null || since < stats.oldestReady.readyAt) {
    const name = scheduleOf(state.position).queue;
    stats.oldestReady = { instanceId: snapshot.instanceId, taskId, queue: name, readyAt: since };
  }
}

/** Sorts the listed stuck claims, oldest expiry first, and the paused workflows, oldest first. */
export function finishStats(stats: StoreStats): StoreStats {
  stats.stuck.claims.sort((a, b) => a.expiresAt - b.expiresAt);
  stats.paused.workflows.sort((a, b) => a.pausedAt - b.pausedAt);
  return stats;
}
