// The differential fuzzer's operation model and its generators (fast-check): what a sequence may
// do, over 3 instances x 3 tasks x 3 workers x 2 event names.
import fc from "fast-check";

export const INSTANCES = ["i0", "i:1", "i{2}"] as const;
export const TASKS = ["t0", "t1", "t2"] as const;
export const WORKERS = ["w0", "w1", "w2"] as const;
/** The event names a sequence sends and waits for. */
export const EVENTS = ["approval", "e:1"] as const;
/** The queues a sequence schedules tasks in ("default" is the one served when none is named). */
export const QUEUES = ["default", "bulk:2"] as const;

export type Inst = 0 | 1 | 2;
export type Task = 0 | 1 | 2;
export type Worker = 0 | 1 | 2;
export type EventIx = 0 | 1;
/** Which earlier claim a fenced write carries. */
export type FenceRef = "none" | "latest" | "first" | "bogus";
/**
 * Which event a fenced write consumes: none; the one the lane's last discovered task of the
 * instance carried (what a worker does); the first or the latest event of that name sent to the
 * instance (stale once consumed, not the oldest while an earlier one is pending); or a sequence no
 * backend issues.
 */
export type ConsumeRef = "none" | "carried" | "first" | "latest" | "bogus";
/**
 * When a wait times out: never, decades ago (due at once), soon (a short time after the step: due
 * once an `elapse` has passed it, see clock.ts), or in 2100 (never during a run).
 */
export type Timeout = "none" | "past" | "soon" | "future";
/** A runAt or a retryAt: absent/null, decades ago (due at once), soon (see Timeout), or in 2100. */
export type When = "none" | "past" | "soon" | "future";
/** A claim's ttl: none (never expires), short (expires once an `elapse` has passed it), one hour. */
export type Lease = "none" | "short" | "long";
/** How long an extend renews a claim for: short (see Lease) or one hour. */
export type Renewal = "short" | "long";
export type QueueIx = 0 | 1;
/** The queues a discovery serves: none named (the default queue), one, or both. */
export type QueueSel = "omit" | QueueIx | "both";
/** A position's schedule: runAt (AtTask only), priority (0: absent, else 1..5), queue (null: absent). */
export interface Schedule {
  runAt: When;
  priority: 0 | 1 | 2 | 3 | 4 | 5;
  queue: QueueIx | null;
}
/** One failed run for failTasks: the claim it carries, and when the task may run again. */
export interface FailItem {
  inst: Inst;
  task: Task;
  fence: FenceRef;
  worker: Worker;
  retry: When;
  error: number;
}

/** Where a completion with `next` moves its workflow (completeTasks' one write per step). */
export type Step =
  | { to: "task"; task: Task; schedule: Schedule }
  | { to: "wait"; event: EventIx; next: Task; timeout: Timeout; schedule: Schedule }
  | { to: "completed"; out: number }
  | { to: "failed"; message: string };

/** A position of an InProgress or Paused shape that a task can be ready at. */
export type WaitPosition =
  | { at: "task"; task: Task }
  | { at: "event"; event: EventIx; next: Task; timeout: Timeout };

export type Shape =
  | { kind: "notStarted" }
  /** `spent`: the position's task is among the done ones (so it is not ready); otherwise it is left out. */
  /** `attempts`: a count of earlier failed runs of the position's task the save carries (0: none). */
  | {
      kind: "atTask";
      task: Task;
      done: Task[];
      spent: boolean;
      input: boolean;
      schedule: Schedule;
      attempts: number;
    }
  | {
      kind: "awaiting";
      event: EventIx;
      next: Task;
      timeout: Timeout;
      done: Task[];
      spent: boolean;
      input: boolean;
      schedule: Schedule;
    }
  | { kind: "fork"; done: Task[] }
  | { kind: "paused"; position: WaitPosition; done: Task[]; reason: boolean }
  | { kind: "cancelled"; done: Task[]; interrupted: Task | null; reason: boolean }
  | { kind: "completed"; out: number }
  | { kind: "failed"; message: string };

export type Op =
  | {
      op: "save";
      inst: Inst;
      shape: Shape;
      age: number;
      fence: FenceRef;
      /** The fence's task, or the task of the lane's last claim on the instance. */
      fenceTask: Task | "last";
      consume: ConsumeRef;
      event: EventIx;
    }
  | { op: "result"; inst: Inst; task: Task; out: number; fence: FenceRef }
  | { op: "load"; inst: Inst }
  | { op: "delete"; inst: Inst }
  | { op: "list" }
  | { op: "claim"; inst: Inst; task: Task; worker: Worker; ttl: Lease }
  | { op: "release"; inst: Inst; task: Task; worker: Worker }
  | { op: "extend"; inst: Inst; task: Task; worker: Worker; renew: Renewal }
  | { op: "find"; worker: Worker; limit: number; queues: QueueSel }
  /** waitForTasks with timeoutMs 0: one look, "ready" whenever a task of the queues is claimable. */
  | { op: "wait"; queues: QueueSel }
  | { op: "claimNext"; worker: Worker; limit: number; ttl: Lease; queues: QueueSel }
  /** failTasks: each item's claim (an earlier one or a bogus token) and its retryAt. */
  | { op: "fail"; items: FailItem[] }
  /** completeTasks; an item with a `step` also moves its workflow on, consuming per `consume`. */
  | {
      op: "complete";
      items: Array<{
        inst: Inst;
        task: Task;
        out: number;
        fence: FenceRef;
        worker: Worker;
        step: Step | null;
        consume: ConsumeRef;
        event: EventIx;
      }>;
    }
  | { op: "race"; inst: Inst; task: Task; ttl: Lease }
  | { op: "cancel"; inst: Inst; reason: boolean }
  | { op: "pause"; inst: Inst; reason: boolean }
  | { op: "resume"; inst: Inst }
  /** `event: "awaited"`: the name the instance's last written wait waits for (else the first name). */
  | { op: "send"; inst: Inst; event: EventIx | "awaited"; payload: number }
  | { op: "events"; inst: Inst }
  /**
   * What a worker does: claim the next ready task (claim-next, limit 1), then one fenced save of
   * `next` over its instance, consuming per `consume` ("carried": the event the task carries),
   * then (when the save landed) the release of the claim. `fails` (not "no"): the run fails
   * instead, failTasks with that retryAt ("none": null). `step` (not null): the run commits with
   * one completeTasks item moving the workflow to it instead of the save and the release.
   */
  | {
      op: "work";
      worker: Worker;
      ttl: Lease;
      queues: QueueSel;
      fails: "no" | When;
      next: Shape;
      step: Step | null;
      age: number;
      consume: ConsumeRef;
      event: EventIx;
    }
  /** A heartbeat: extendTaskClaim of the last claim made on the instance, by its holder. */
  | { op: "heartbeat"; inst: Inst; renew: Renewal }
  /** loadTaskResult: one output, as loadSnapshot would show it. */
  | { op: "taskResult"; inst: Inst; task: Task }
  /** loadTaskClaims: the instance's claims, neither released nor revoked. */
  | { op: "claims"; inst: Inst }
  /**
   * purgeFinished with a cut-off no finish time of a run is near: decades ago (purges nothing) or
   * in 2100 (every finished workflow). The limit covers all three instances, so which ones go does
   * not depend on finish times a millisecond apart.
   */
  | { op: "purge"; before: "past" | "future" }
  /**
   * Time passes: the runner sleeps until every short lease and every soon time set since the
   * last elapse has passed on every clock (clock.ts). Nothing is called; nothing is compared.
   */
  | { op: "elapse" };

const inst = fc.constantFrom<Inst>(0, 1, 2);
const task = fc.constantFrom<Task>(0, 1, 2);
const worker = fc.constantFrom<Worker>(0, 1, 2);
const event = fc.constantFrom<EventIx>(0, 1);
const fenceRef = fc.constantFrom<FenceRef>("none", "none", "latest", "first", "bogus");
/** A save mostly consumes nothing: a consume without a fence is a ValidationError. */
const consumeRef = fc.oneof(
  { weight: 6, arbitrary: fc.constant<ConsumeRef>("none") },
  { weight: 4, arbitrary: fc.constantFrom<ConsumeRef>("carried", "first", "latest", "bogus") },
);
const timeout = fc.constantFrom<Timeout>("none", "past", "soon", "future");
const when = fc.constantFrom<When>("none", "past", "soon", "future");
/** Of the claims with a ttl, two in three are short (an hour in an untimed sequence). */
const lease = fc.constantFrom<Lease>("none", "none", "short", "short", "long");
const renewal = fc.constantFrom<Renewal>("short", "long");
const queueSel = fc.constantFrom<QueueSel>("omit", "omit", 0, 1, "both");
/** Mostly unscheduled (the shapes of before), else a runAt, a priority, a queue. */
const schedule: fc.Arbitrary<Schedule> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Schedule>({ runAt: "none", priority: 0, queue: null }) },
  {
    weight: 3,
    arbitrary: fc.record({
      runAt: fc.constantFrom<When>("none", "none", "past", "soon", "future"),
      priority: fc.constantFrom<Schedule["priority"]>(0, 1, 2, 3, 4, 5),
      queue: fc.constantFrom<QueueIx | null>(null, 0, 1, 1),
    }),
  },
);
const doneTasks = fc.uniqueArray(task, { maxLength: 3 });
const spent = fc.constantFrom(false, false, false, false, true);

const waitPosition: fc.Arbitrary<WaitPosition> = fc.oneof(
  fc.record({ at: fc.constant("task" as const), task }),
  fc.record({ at: fc.constant("event" as const), event, next: task, timeout }),
);

const shape: fc.Arbitrary<Shape> = fc.oneof(
  { weight: 1, arbitrary: fc.constant<Shape>({ kind: "notStarted" }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("atTask" as const),
      task,
      done: doneTasks,
      spent,
      input: fc.boolean(),
      schedule,
      attempts: fc.constantFrom(0, 0, 0, 1, 2),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("awaiting" as const),
      event,
      next: task,
      timeout,
      done: doneTasks,
      spent,
      input: fc.boolean(),
      schedule,
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("fork" as const), done: doneTasks }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("paused" as const),
      position: waitPosition,
      done: doneTasks,
      reason: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("cancelled" as const),
      done: doneTasks,
      interrupted: fc.option(task, { nil: null }),
      reason: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("completed" as const), out: fc.nat(255) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("failed" as const), message: fc.string({ maxLength: 8 }) }),
  },
);

/** What a worker moves a workflow to: on to a task or a wait, or finished. */
const nextShape: fc.Arbitrary<Shape> = fc.oneof(
  { weight: 3, arbitrary: shape.filter((s) => s.kind === "atTask") },
  { weight: 4, arbitrary: shape.filter((s) => s.kind === "awaiting") },
  { weight: 1, arbitrary: shape.filter((s) => s.kind === "completed" || s.kind === "cancelled") },
);

/** Mostly on to a task or a wait, sometimes finished. */
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ to: fc.constant("task" as const), task, schedule }) },
  {
    weight: 3,
    arbitrary: fc.record({ to: fc.constant("wait" as const), event, next: task, timeout, schedule }),
  },
  { weight: 1, arbitrary: fc.record({ to: fc.constant("completed" as const), out: fc.nat(255) }) },
  {
    weight: 1,
    arbitrary: fc.record({ to: fc.constant("failed" as const), message: fc.string({ maxLength: 8 }) }),
  },
);

const completeItems = fc.array(
  fc.record({
    inst,
    task,
    out: fc.nat(255),
    fence: fc.constantFrom<FenceRef>("latest", "latest", "first", "bogus"),
    worker,
    step: fc.option(step, { nil: null, freq: 2 }),
    consume: consumeRef,
    event,
  }),
  { minLength: 1, maxLength: 3 },
);

const failItems = fc.array(
  fc.record({
    inst,
    task,
    fence: fc.constantFrom<FenceRef>("latest", "latest", "first", "bogus"),
    worker,
    retry: when,
    error: fc.nat(9),
  }),
  { minLength: 1, maxLength: 2 },
);

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("save" as const),
      inst,
      shape,
      age: fc.nat(3),
      fence: fenceRef,
      fenceTask: fc.constantFrom<Task | "last">(0, 1, 2, "last", "last"),
      consume: consumeRef,
      event,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("result" as const),
      inst,
      task,
      out: fc.nat(255),
      fence: fenceRef,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("load" as const), inst }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("delete" as const), inst }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("list" as const) }) },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant("claim" as const), inst, task, worker, ttl: lease }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("release" as const), inst, task, worker }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("extend" as const), inst, task, worker, renew: renewal }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("find" as const),
      worker,
      limit: fc.integer({ min: 1, max: 4 }),
      queues: queueSel,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("wait" as const), queues: queueSel }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("claimNext" as const),
      worker,
      limit: fc.integer({ min: 1, max: 3 }),
      ttl: lease,
      queues: queueSel,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("fail" as const), items: failItems }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("race" as const), inst, task, ttl: lease }) },
  // Duplicates (same instance and task) are kept on purpose: both sides must refuse them.
  { weight: 2, arbitrary: fc.record({ op: fc.constant("complete" as const), items: completeItems }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("cancel" as const), inst, reason: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("pause" as const), inst, reason: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("resume" as const), inst }) },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("send" as const),
      inst,
      event: fc.constantFrom<EventIx | "awaited">(0, 1, "awaited", "awaited"),
      payload: fc.nat(255),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("events" as const), inst }) },
  {
    weight: 7,
    arbitrary: fc.record({
      op: fc.constant("work" as const),
      worker,
      ttl: lease,
      queues: queueSel,
      fails: fc.constantFrom<"no" | When>("no", "no", "no", "no", "no", "none", "past", "soon", "future"),
      next: nextShape,
      step: fc.option(step, { nil: null, freq: 2 }),
      age: fc.nat(3),
      consume: fc.constantFrom<ConsumeRef>(
        "carried",
        "carried",
        "carried",
        "none",
        "first",
        "latest",
        "bogus",
      ),
      event,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("heartbeat" as const), inst, renew: renewal }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("taskResult" as const), inst, task }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("claims" as const), inst }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("purge" as const),
      before: fc.constantFrom<"past" | "future">("past", "future", "future"),
    }),
  },
  // Kept in timed sequences only (a third). Each elapse that has a deadline to pass sleeps up to a
  // short lease (plus the clock skew), which the time budget pays.
  { weight: 4, arbitrary: fc.constant<Op>({ op: "elapse" }) },
);

/**
 * Unfenced saves that open a sequence (each instance with a probability of 4/5), so that most
 * operations meet existing workflows. Each shrinks away on its own.
 */
const setupSave = (i: Inst) =>
  fc.record({
    op: fc.constant("save" as const),
    inst: fc.constant(i),
    shape: nextShape,
    age: fc.nat(3),
    fence: fc.constant<FenceRef>("none"),
    fenceTask: fc.constant<Task>(0),
    consume: fc.constant<ConsumeRef>("none"),
    event,
  });
const setupArb: fc.Arbitrary<Op[]> = fc
  .tuple(...([0, 1, 2] as const).map((i) => fc.option(setupSave(i), { nil: null, freq: 5 })))
  .map((saves) => saves.filter((save) => save !== null));

/**
 * The same operation without time: short leases and renewals last an hour, soon times are in
 * 2100, an elapse is dropped. A sequence spends real time only when it is timed.
 */
function untimed(op: Op): Op | null {
  if (op.op === "elapse") return null;
  const text = JSON.stringify(op);
  if (!text.includes('"short"') && !text.includes('"soon"')) return op;
  return JSON.parse(text.replaceAll('"short"', '"long"').replaceAll('"soon"', '"future"')) as Op;
}

/**
 * A third of the sequences are timed (short leases, soon times, elapses): each of their elapses
 * sleeps up to a short lease, which the per-backend time budget pays. The others run at full
 * speed. Shrinking goes towards untimed, so a minimal sequence is timed only when time matters.
 */
export const sequenceArb: fc.Arbitrary<Op[]> = fc
  .tuple(
    fc.constantFrom(false, false, true),
    setupArb,
    fc.array(opArb, { minLength: 1, maxLength: 37, size: "medium" }),
  )
  .map(([timed, setup, ops]) => {
    const all = [...setup, ...ops];
    return timed ? all : all.flatMap((op) => untimed(op) ?? []);
  });

export function describeOps(ops: Op[]): string {
  return ops.map((o, i) => `${i}: ${JSON.stringify(o)}`).join("\n");
}
