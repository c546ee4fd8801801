// The checks of the newer operations, over the recorded calls, the worker loops' events and what
// the controller did. Each is sound (a reported violation is a real one): times of different
// clocks are compared with a tolerance, and a fact a SIGKILL may have kept out of a log is only
// judged where it was logged.
import type { RecordedEvent } from "../recorder.ts";
import type { Plan } from "./controller.ts";
import type { LoopEvent } from "./logs.ts";
import { queueOfTask, queuesOfWorker, type WorkflowKind } from "./workload.ts";

/** How much earlier than its runAt or retryAt a claim may be judged (store clock vs worker clock). */
export const TIME_TOLERANCE_MS = 100;

export interface OperationFigures {
  cancels: number;
  workflowPauses: number;
  eventsSent: number;
  eventsConsumed: number;
  timeouts: number;
  retries: number;
  /** Claims of a task after a durable sleep or a retry backoff, checked against its time. */
  delayedClaims: number;
  secondQueueClaims: number;
  urgentClaims: number;
}

type Claim = Extract<RecordedEvent, { k: "claim" }>;

/** The top-level workflow of an instance (a fan-out child's parent). */
const topOf = (instanceId: string) => instanceId.split("#")[0]!;

export function checkOperations(
  events: RecordedEvent[],
  loop: LoopEvent[],
  plans: ReadonlyMap<string, Plan>,
  kinds: ReadonlyMap<string, WorkflowKind>,
): { figures: OperationFigures; violations: string[] } {
  const violations: string[] = [];
  const byInstance = new Map<string, RecordedEvent[]>();
  for (const e of events) {
    const list = byInstance.get(e.i) ?? [];
    list.push(e);
    byInstance.set(e.i, list);
  }
  const claimsOf = (i: string, t: string) =>
    (byInstance.get(i) ?? []).filter((e): e is Claim => e.k === "claim" && e.t === t);
  const figures: OperationFigures = {
    cancels: 0,
    workflowPauses: 0,
    eventsSent: 0,
    eventsConsumed: 0,
    timeouts: 0,
    retries: 0,
    delayedClaims: 0,
    secondQueueClaims: 0,
    urgentClaims: 0,
  };
  for (const [id, plan] of plans) {
    const recorded = byInstance.get(id) ?? [];
    if (plan.kind === "cancel" && plan.done?.outcome === "landed") {
      figures.cancels++;
      violations.push(...afterCancel(id, plan.done.r, recorded));
    }
    if (plan.kind === "pause" && plan.done?.outcome === "landed") {
      figures.workflowPauses++;
      violations.push(...whilePaused(id, plan.done, recorded));
    }
    if (plan.kind === "events" && !plan.uncertain) figures.eventsSent += plan.sent.length;
  }
  const consumed = checkEvents(loop, plans, kinds, violations);
  figures.eventsConsumed = consumed.events;
  figures.timeouts = consumed.timeouts;
  for (const e of loop) {
    // A durable sleep: the step after it is never claimed before the runAt its commit wrote.
    if (e.type === "committed" && e.runAt !== undefined) {
      for (const c of claimsOf(e.instanceId, "after")) {
        figures.delayedClaims++;
        if (c.ca < e.runAt - TIME_TOLERANCE_MS)
          violations.push(`${e.instanceId}/after claimed at ${c.ca}, ${e.runAt - c.ca} ms before its runAt`);
      }
    }
    // A retry: failTasks landed with this token, so every later claim (a higher token) came after
    // it and must wait for retryAt.
    if (e.type === "retrying") {
      figures.retries++;
      for (const c of claimsOf(e.instanceId, e.taskId).filter((c) => c.tok > e.token)) {
        figures.delayedClaims++;
        if (c.ca < e.retryAt - TIME_TOLERANCE_MS)
          violations.push(
            `${e.instanceId}/${e.taskId} claimed at ${c.ca} (token ${c.tok}), ${e.retryAt - c.ca} ms before its retryAt`,
          );
      }
    }
    // The store hands a task out with the priority and queue its workflow gave it.
    if (e.type === "claimed") {
      const kind = kinds.get(topOf(e.instanceId));
      if (kind === undefined) continue;
      const priority = kind === "urgent" ? 1 : 3;
      if (kind === "urgent") figures.urgentClaims++;
      const queue = queueOfTask(kind, e.taskId);
      if (e.priority !== priority || e.queue !== queue)
        violations.push(
          `${e.instanceId}/${e.taskId} claimed with priority ${e.priority} in queue ${e.queue}, expected ${priority} in ${queue}`,
        );
    }
  }
  // Queues: a task is only ever claimed by a worker that serves its queue.
  for (const e of events) {
    if (e.k !== "claim") continue;
    const kind = kinds.get(topOf(e.i));
    if (kind === undefined) continue;
    const queue = queueOfTask(kind, e.t);
    if (queue !== "default") figures.secondQueueClaims++;
    if (!queuesOfWorker(e.w).includes(queue))
      violations.push(`${e.i}/${e.t} (queue ${queue}) claimed by ${e.w}, which does not serve it`);
  }
  return { figures, violations };
}

/** After the cancel returned: no claim, renewal or write of the instance landed. */
function afterCancel(id: string, cancelled: number, recorded: RecordedEvent[]): string[] {
  const out: string[] = [];
  for (const e of recorded) {
    if (e.q <= cancelled) continue;
    if (e.k === "claim")
      out.push(`${id}/${e.t} claimed (token ${e.tok}) at ${e.q}, after its cancel returned at ${cancelled}`);
    if (e.k === "extend")
      out.push(`${id}/${e.t} lease renewed by ${e.w} at ${e.q}, after its cancel returned at ${cancelled}`);
    if (e.k === "write" && e.ok)
      out.push(
        `${id}: ${e.op} write of ${e.w} (token ${e.tok}) landed at ${e.q}, after its cancel returned at ${cancelled}`,
      );
  }
  return out;
}

/**
 * Between the pause's return and the resume's call: no claim was granted and no write moved the
 * workflow on (the soak's worker records a result only with the write that moves on, so each of
 * its writes that landed there is one; a task already running may record a result alone, which
 * the position comparison allows), and its position is the same at both ends.
 */
function whilePaused(
  id: string,
  done: NonNullable<Extract<Plan, { kind: "pause" }>["done"]>,
  recorded: RecordedEvent[],
): string[] {
  const out: string[] = [];
  const from = done.r;
  const to = done.resumeQ ?? Number.POSITIVE_INFINITY;
  if (done.after !== undefined && done.beforeResume !== undefined && done.after !== done.beforeResume)
    out.push(
      `${id} moved while paused: ${done.after} after the pause, ${done.beforeResume} before the resume`,
    );
  for (const e of recorded) {
    if (e.q <= from || e.k === "release-req" || !("r" in e) || e.r >= to) continue;
    if (e.k === "claim")
      out.push(`${id}/${e.t} claimed (token ${e.tok}) at ${e.q} while paused (${from}..${to})`);
    if (e.k === "write" && e.ok)
      out.push(
        `${id}: ${e.op} write of ${e.w} (token ${e.tok}) landed at ${e.q} while paused (${from}..${to})`,
      );
  }
  return out;
}

/**
 * Events: each commit that moved an approval workflow past a wait consumed the event sent for that
 * wait (the first sent to the first wait: in order), no event was consumed by two commits, and the
 * expiring workflow's wait timed out with no event.
 */
function checkEvents(
  loop: LoopEvent[],
  plans: ReadonlyMap<string, Plan>,
  kinds: ReadonlyMap<string, WorkflowKind>,
  violations: string[],
): { events: number; timeouts: number } {
  const consumedBy = new Map<string, number>();
  let timeouts = 0;
  for (const e of loop) {
    if (e.type !== "committed" || (e.taskId !== "approve" && e.taskId !== "countersign")) continue;
    const kind = kinds.get(e.instanceId);
    if (kind === "expiring") {
      timeouts++;
      if (e.event !== undefined || e.timedOut !== true)
        violations.push(
          `${e.instanceId}: its wait, sent no event, ended with ${JSON.stringify(e.event ?? null)}`,
        );
      continue;
    }
    const plan = plans.get(e.instanceId);
    if (plan?.kind !== "events" || plan.uncertain) continue;
    const key = `${e.instanceId}#${e.event?.sequence}`;
    consumedBy.set(key, (consumedBy.get(key) ?? 0) + 1);
    if (consumedBy.get(key) === 2)
      violations.push(`${e.instanceId}: event ${e.event?.sequence} consumed by two commits`);
    const want = plan.sent[e.taskId === "approve" ? 0 : 1];
    if (e.event === undefined || want === undefined || e.event.sequence !== want.sequence)
      violations.push(
        `${e.instanceId}/${e.taskId} consumed ${JSON.stringify(e.event ?? null)}, expected the event sent ${e.taskId === "approve" ? "first" : "second"} (${want?.sequence ?? "not sent"})`,
      );
  }
  return { events: consumedBy.size, timeouts };
}
