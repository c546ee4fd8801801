// Runs one fuzzed operation on one lane and returns a plain, comparable outcome (a result or an
// error code), normalised by the lane.
import type { DiscoveryOptions, TaskClaim, TaskCompletion, WriteOptions } from "@sayiir/persistence-core";
import { isPersistenceError } from "@sayiir/persistence-core";
import { comparable } from "@sayiir/persistence-core/conformance";
import { bytes, type Lane, normTimes } from "./lane.ts";
import {
  EVENTS,
  INSTANCES,
  type Inst,
  type Lease,
  type Op,
  QUEUES,
  type QueueSel,
  type Renewal,
  WORKERS,
} from "./ops.ts";
import { buildSnapshot, nextOf, outBytes, retryAtOf, stepShape, taskId } from "./snapshots.ts";

const HOUR = 3_600_000;

/**
 * The times of one step, the same on both lanes (clock.ts): `soon` for soon runAt/retryAt/timeouts,
 * `shortMs` for short leases and renewals.
 */
export interface StepTime {
  soon: number;
  shortMs: number;
}

function ttlOf(lease: Lease, at: StepTime): number | null {
  return lease === "none" ? null : lease === "short" ? at.shortMs : HOUR;
}

function renewalOf(renew: Renewal, at: StepTime): number {
  return renew === "short" ? at.shortMs : HOUR;
}

export function normError(error: unknown): unknown {
  if (isPersistenceError(error)) return { error: error.code };
  return {
    error: "UNTYPED",
    detail: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  };
}

/** The discovery options of a fuzzed find or claim-next: none (the default queue), one queue, or both. */
function discovery(queues: QueueSel): DiscoveryOptions | undefined {
  if (queues === "omit") return undefined;
  return { queues: queues === "both" ? [...QUEUES].reverse() : [QUEUES[queues]] };
}

const byInstanceThenTask = <T extends { instanceId: string; taskId: string }>(x: T, y: T): number =>
  x.instanceId === y.instanceId ? (x.taskId < y.taskId ? -1 : 1) : x.instanceId < y.instanceId ? -1 : 1;

/** The write options of a fuzzed save: its fence (if any) and the event it consumes (if any). */
function saveOptions(lane: Lane, op: Extract<Op, { op: "save" }>): WriteOptions | undefined {
  const fenceTask =
    op.fenceTask === "last"
      ? (lane.lastClaim.get(lane.ids(op.inst))?.taskId ?? taskId(0))
      : taskId(op.fenceTask);
  const fence = lane.fence(op.inst, fenceTask, op.fence);
  const consumeEvent = lane.consumeEvent(op.inst, EVENTS[op.event], op.consume);
  if (fence === undefined && consumeEvent === undefined) return undefined;
  return { ...(fence ? { claim: fence } : {}), ...(consumeEvent ? { consumeEvent } : {}) };
}

/** The operations of Part 1 (snapshots, results, claims, discovery, completion). */
async function applyCore(lane: Lane, op: Op, at: StepTime): Promise<unknown> {
  const b = lane.backend;
  const id = (i: Inst) => lane.ids(i);
  switch (op.op) {
    case "save":
      await b.saveSnapshot(buildSnapshot(id(op.inst), op.shape, op.age, at.soon), saveOptions(lane, op));
      lane.written.set(id(op.inst), op.shape);
      return "ok";
    case "result": {
      const fence = lane.fence(op.inst, taskId(op.task), op.fence);
      await b.saveTaskResult(
        id(op.inst),
        taskId(op.task),
        outBytes(op.out, 3),
        fence ? { claim: fence } : undefined,
      );
      return "ok";
    }
    case "load":
      return normTimes(comparable(await b.loadSnapshot(id(op.inst))));
    case "delete":
      await b.deleteSnapshot(id(op.inst));
      lane.forgetEvents(id(op.inst));
      lane.written.delete(id(op.inst));
      return "ok";
    case "list": {
      const all = await b.listSnapshots();
      const mine = INSTANCES.map((_, i) => id(i as Inst));
      return all.filter((x) => mine.includes(x)).sort();
    }
    case "claim":
      return lane.normClaim(
        await b.claimTask(id(op.inst), taskId(op.task), WORKERS[op.worker], ttlOf(op.ttl, at)),
      );
    case "release":
      await b.releaseTaskClaim(id(op.inst), taskId(op.task), WORKERS[op.worker]);
      return "ok";
    case "extend":
      return lane.normClaim(
        await b.extendTaskClaim(id(op.inst), taskId(op.task), WORKERS[op.worker], renewalOf(op.renew, at)),
      );
    case "find":
      return (await b.findAvailableTasks(WORKERS[op.worker], op.limit, discovery(op.queues))).map((t) =>
        lane.normTask(t),
      );
    case "wait": {
      // One look. It must never miss a claimable task (a lost wake-up): when one is claimable it
      // says "ready". Its answer is not compared when none is: a poll backend's look may say
      // "ready" of a task a live claim holds outside its lease index, which costs the caller one
      // empty claim, not a task.
      const reason = await b.waitForTasks({ timeoutMs: 0, ...discovery(op.queues) });
      const claimable = (await b.findAvailableTasks(WORKERS[0], 1, discovery(op.queues))).length > 0;
      return claimable ? reason : "none claimable";
    }
    case "claimNext": {
      const tasks = await b.claimAvailableTasks(
        WORKERS[op.worker],
        op.limit,
        ttlOf(op.ttl, at),
        discovery(op.queues),
      );
      return [...tasks]
        .sort(byInstanceThenTask)
        .map((t) => ({ ...lane.normTask(t), claim: lane.normClaim(t.claim) }));
    }
    case "complete": {
      const outcomes = await b.completeTasks(
        op.items.map((item, i): TaskCompletion => {
          const completion: TaskCompletion = {
            claim: lane.completionClaim(item.inst, taskId(item.task), item.fence, WORKERS[item.worker]),
            output: outBytes(item.out, 4),
          };
          if (item.step === null) return completion;
          const consumeEvent = lane.consumeEvent(item.inst, EVENTS[item.event], item.consume);
          return {
            ...completion,
            next: nextOf(item.step, i, at.soon),
            ...(consumeEvent ? { consumeEvent } : {}),
          };
        }),
      );
      op.items.forEach((item, i) => {
        if (item.step !== null && outcomes[i] === null) lane.written.set(id(item.inst), stepShape(item.step));
      });
      return outcomes.map((o) => (o === null ? "ok" : normError(o)));
    }
    case "fail": {
      const outcomes = await b.failTasks(
        op.items.map((item, i) => ({
          claim: lane.completionClaim(item.inst, taskId(item.task), item.fence, WORKERS[item.worker]),
          error: `boom ${item.error}`,
          retryAt: retryAtOf(item.retry, i, at.soon),
        })),
      );
      return outcomes.map((o) => (o === null ? "ok" : normError(o)));
    }
    default:
      return applyControl(lane, op, at);
  }
}

/** The operations of workflow control and events. */
async function applyControl(lane: Lane, op: Op, at: StepTime): Promise<unknown> {
  const b = lane.backend;
  const id = (i: Inst) => lane.ids(i);
  switch (op.op) {
    case "cancel":
      await b.cancelWorkflow(id(op.inst), op.reason ? { reason: "fuzz", requestedBy: "lane" } : undefined);
      return "ok";
    case "pause":
      await b.pauseWorkflow(id(op.inst), op.reason ? { reason: "fuzz" } : {});
      return "ok";
    case "resume":
      await b.resumeWorkflow(id(op.inst));
      return "ok";
    case "send": {
      const name = lane.eventName(op.inst, op.event);
      const sequence = await b.sendEvent(id(op.inst), name, outBytes(op.payload, 5));
      return { sequence: lane.sentEvent(id(op.inst), name, sequence) };
    }
    case "events":
      return lane.normEvents(id(op.inst), await b.loadPendingEvents(id(op.inst)));
    case "heartbeat": {
      const claim = lane.lastClaim.get(id(op.inst));
      const [taskId_, workerId] =
        claim === undefined ? [taskId(0), WORKERS[0]] : [claim.taskId, claim.workerId];
      return lane.normClaim(await b.extendTaskClaim(id(op.inst), taskId_, workerId, renewalOf(op.renew, at)));
    }
    case "work":
      return work(lane, op, at);
    default:
      return applyOperations(lane, op);
  }
}

/** The cut-offs of a fuzzed purge: 2000-01-01 and 2100-01-01, far from any finish time of a run. */
const PURGE_BEFORE = { past: Date.UTC(2000, 0, 1), future: Date.UTC(2100, 0, 1) } as const;

/** The operations for operating a store: result reads, claim listings, retention. */
async function applyOperations(lane: Lane, op: Op): Promise<unknown> {
  const b = lane.backend;
  const id = (i: Inst) => lane.ids(i);
  switch (op.op) {
    case "taskResult": {
      const output = await b.loadTaskResult(id(op.inst), taskId(op.task));
      return output === null ? null : bytes(output);
    }
    case "claims":
      return (await b.loadTaskClaims(id(op.inst))).map((claim) => lane.normClaim(claim));
    case "elapse":
      // The runner sleeps (clock.ts); nothing is called.
      return "ok";
    case "purge": {
      const purged = await b.purgeFinished({ finishedBefore: PURGE_BEFORE[op.before], limit: 3 });
      // Forget what is gone, as after a delete: a re-created instance numbers its events afresh.
      for (const i of [0, 1, 2] as const) {
        const gone = await b.loadSnapshot(id(i)).then(
          () => false,
          () => true,
        );
        if (gone) {
          lane.forgetEvents(id(i));
          lane.written.delete(id(i));
        }
      }
      return { purged };
    }
    default:
      throw new Error(`${op.op} is not applied here`);
  }
}

/** Claim-next of one task, then the fenced save that moves its workflow on (and consumes its event). */
async function work(lane: Lane, op: Extract<Op, { op: "work" }>, at: StepTime): Promise<unknown> {
  const [task] = await lane.backend.claimAvailableTasks(
    WORKERS[op.worker],
    1,
    ttlOf(op.ttl, at),
    discovery(op.queues),
  );
  if (task === undefined) return { claimed: null };
  const claimed = { ...lane.normTask(task), claim: lane.normClaim(task.claim) };
  if (op.fails !== "no") {
    const retryAt = retryAtOf(op.fails, 7, at.soon);
    const [outcome] = await lane.backend.failTasks([{ claim: task.claim, error: "worker failed", retryAt }]);
    return { claimed, failed: outcome === null || outcome === undefined ? "ok" : normError(outcome) };
  }
  const inst = lane.inst(task.instanceId);
  if (inst === undefined) return { claimed, saved: "not an instance of this run" };
  const consumeEvent =
    op.consume === "carried" ? task.event : lane.consumeEvent(inst, EVENTS[op.event], op.consume);
  if (op.step !== null) {
    const [outcome] = await lane.backend.completeTasks([
      {
        claim: task.claim,
        output: outBytes(op.age, 6),
        next: nextOf(op.step, op.age, at.soon),
        ...(consumeEvent ? { consumeEvent } : {}),
      },
    ]);
    if (outcome === null) lane.written.set(task.instanceId, stepShape(op.step));
    return { claimed, stepped: outcome === null || outcome === undefined ? "ok" : normError(outcome) };
  }
  try {
    const options: WriteOptions = { claim: task.claim, ...(consumeEvent ? { consumeEvent } : {}) };
    await lane.backend.saveSnapshot(buildSnapshot(task.instanceId, op.next, op.age, at.soon), options);
    lane.written.set(task.instanceId, op.next);
  } catch (error) {
    return { claimed, saved: normError(error) };
  }
  try {
    await lane.backend.releaseTaskClaim(task.instanceId, task.taskId, WORKERS[op.worker]);
    return { claimed, saved: "ok", released: "ok" };
  } catch (error) {
    return { claimed, saved: "ok", released: normError(error) };
  }
}

/** Runs one operation on one lane; returns a plain, comparable outcome. */
export async function apply(lane: Lane, op: Op, at: StepTime): Promise<unknown> {
  try {
    return await applyCore(lane, op, at);
  } catch (error) {
    return normError(error);
  }
}

/**
 * Three workers claim one task at once through three clients. At most one may win; the model then
 * replays the same claims with the winner first, so both sides continue from the same state.
 */
export async function runRace(
  subject: Lane,
  model: Lane,
  op: Extract<Op, { op: "race" }>,
  at: StepTime,
): Promise<[unknown, unknown]> {
  const ttl = ttlOf(op.ttl, at);
  const settled = await Promise.allSettled(
    WORKERS.map((w, i) =>
      subject.clients[i % subject.clients.length]!.claimTask(subject.ids(op.inst), taskId(op.task), w, ttl),
    ),
  );
  const wins = settled.flatMap((r, i) =>
    r.status === "fulfilled" && r.value !== null ? [{ i, claim: r.value }] : [],
  );
  const failures = settled.flatMap((r) => (r.status === "rejected" ? [normError(r.reason)] : []));
  const winner = wins[0]?.i ?? 0;
  const order = [winner, ...[0, 1, 2].filter((i) => i !== winner)];
  const modelResults: Array<TaskClaim | null> = [];
  for (const i of order) {
    modelResults.push(await model.backend.claimTask(model.ids(op.inst), taskId(op.task), WORKERS[i]!, ttl));
  }
  const modelWins = modelResults.filter((c) => c !== null);
  const subjectOut = {
    winners: wins.length,
    failures,
    claim: wins[0] ? subject.normClaim(wins[0].claim) : null,
  };
  const modelOut = {
    winners: modelWins.length,
    failures: [],
    claim: modelWins[0] ? model.normClaim(modelWins[0]) : null,
  };
  return [subjectOut, modelOut];
}
