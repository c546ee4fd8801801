// Differential fuzzing: random operation sequences run on a backend under test and on the memory
// reference, comparing every result and error code step by step.
//
// Only time-independent results are compared:
// - snapshots get updatedAt far in the future (year 2100+), so saveTaskResult's
//   `updatedAt = max(old, now)` keeps them, and the discovery order (updatedAt, then instance id)
//   is the same on every clock;
// - ttls are none or one hour, so nothing expires during a run;
// - claimedAt/expiresAt are compared as "set"/null; tokens are compared by identity (each new
//   token gets a label in the order claims were made, per backend) and each backend's tokens are
//   checked to strictly increase per (instance, task), across releases and delete + re-create.
import type { PersistentBackend, TaskClaim, WorkflowSnapshot } from "@sayiir/persistence-core";
import { isPersistenceError } from "@sayiir/persistence-core";
import { atTask, comparable, finished, inProgress } from "@sayiir/persistence-core/conformance";
import fc from "fast-check";

export const INSTANCES = ["i0", "i:1", "i{2}"] as const;
export const TASKS = ["t0", "t1", "t2"] as const;
export const WORKERS = ["w0", "w1", "w2"] as const;
/** 2100-01-01: later than any clock a run sees, so saveTaskResult leaves updatedAt alone. */
export const FUTURE = 4_102_444_800_000;
const HOUR = 3_600_000;
/** A token no backend issues (global sequences are small, time-based ones are ~1.7e15). */
export const BOGUS_TOKEN = Number.MAX_SAFE_INTEGER - 7;

type Inst = 0 | 1 | 2;
type Task = 0 | 1 | 2;
type Worker = 0 | 1 | 2;
/** Which earlier claim a fenced write carries. */
export type FenceRef = "none" | "latest" | "first" | "bogus";

export type Shape =
  | { kind: "notStarted" }
  | { kind: "atTask"; task: Task; done: Task[]; input: boolean }
  | { kind: "fork"; done: Task[] }
  | { kind: "completed"; out: number }
  | { kind: "failed"; message: string };

export type Op =
  | { op: "save"; inst: Inst; shape: Shape; age: number; fence: FenceRef; fenceTask: Task }
  | { op: "result"; inst: Inst; task: Task; out: number; fence: FenceRef }
  | { op: "load"; inst: Inst }
  | { op: "delete"; inst: Inst }
  | { op: "list" }
  | { op: "claim"; inst: Inst; task: Task; worker: Worker; ttl: boolean }
  | { op: "release"; inst: Inst; task: Task; worker: Worker }
  | { op: "extend"; inst: Inst; task: Task; worker: Worker }
  | { op: "find"; worker: Worker; limit: number }
  | { op: "claimNext"; worker: Worker; limit: number; ttl: boolean }
  | { op: "complete"; items: Array<{ inst: Inst; task: Task; out: number; fence: FenceRef; worker: Worker }> }
  | { op: "race"; inst: Inst; task: Task; ttl: boolean };

const inst = fc.constantFrom<Inst>(0, 1, 2);
const task = fc.constantFrom<Task>(0, 1, 2);
const worker = fc.constantFrom<Worker>(0, 1, 2);
const fenceRef = fc.constantFrom<FenceRef>("none", "none", "latest", "first", "bogus");
const doneTasks = fc.uniqueArray(task, { maxLength: 3 });

const shape: fc.Arbitrary<Shape> = fc.oneof(
  { weight: 1, arbitrary: fc.constant<Shape>({ kind: "notStarted" }) },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("atTask" as const),
      task,
      done: doneTasks,
      input: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("fork" as const), done: doneTasks }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("completed" as const), out: fc.nat(255) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("failed" as const), message: fc.string({ maxLength: 8 }) }),
  },
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
      fenceTask: task,
    }),
  },
  {
    weight: 4,
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
    weight: 4,
    arbitrary: fc.record({ op: fc.constant("claim" as const), inst, task, worker, ttl: fc.boolean() }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("release" as const), inst, task, worker }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("extend" as const), inst, task, worker }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("find" as const), worker, limit: fc.integer({ min: 1, max: 4 }) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("claimNext" as const),
      worker,
      limit: fc.integer({ min: 1, max: 3 }),
      ttl: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("race" as const), inst, task, ttl: fc.boolean() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("complete" as const),
      // Duplicates (same instance and task) are kept on purpose: both sides must refuse them.
      items: fc.array(
        fc.record({
          inst,
          task,
          out: fc.nat(255),
          fence: fc.constantFrom<FenceRef>("latest", "latest", "first", "bogus"),
          worker,
        }),
        { minLength: 1, maxLength: 3 },
      ),
    }),
  },
);

export const sequenceArb = fc.array(opArb, { minLength: 1, maxLength: 40, size: "medium" });

/** One side of the comparison: a backend (and two more clients for races) plus its token bookkeeping. */
export class Lane {
  /** Label of each (instance, task, token): tokens need only be unique per (instance, task). */
  readonly labels = new Map<string, string>();
  /** Claims made in this run, in order, per "instance\0task". */
  readonly claims = new Map<string, TaskClaim[]>();
  readonly lastToken = new Map<string, number>();
  readonly violations: string[] = [];
  readonly name: string;
  readonly clients: PersistentBackend[];
  readonly ids: (inst: Inst) => string;
  #next = 0;

  constructor(name: string, clients: PersistentBackend[], ids: (inst: Inst) => string) {
    this.name = name;
    this.clients = clients;
    this.ids = ids;
  }

  get backend(): PersistentBackend {
    return this.clients[0]!;
  }

  label(claim: TaskClaim): string {
    const id = `${claim.instanceId}\0${claim.taskId}\0${claim.token}`;
    let label = this.labels.get(id);
    if (label === undefined) {
      label = `c${this.#next++}`;
      this.labels.set(id, label);
      const key = `${claim.instanceId}\0${claim.taskId}`;
      const last = this.lastToken.get(key);
      if (!Number.isSafeInteger(claim.token) || claim.token < 1) {
        this.violations.push(`token ${claim.token} is not a positive safe integer`);
      }
      if (last !== undefined && claim.token <= last) {
        this.violations.push(`token ${claim.token} on ${key} does not exceed the earlier ${last}`);
      }
      this.lastToken.set(key, claim.token);
      const list = this.claims.get(key) ?? [];
      list.push(claim);
      this.claims.set(key, list);
    }
    return label;
  }

  /** The claim a completion carries: an earlier claim of this run, or a made-up token for `worker`. */
  completionClaim(inst: Inst, taskId: string, ref: FenceRef, worker: string): TaskClaim {
    const list = this.claims.get(`${this.ids(inst)}\0${taskId}`) ?? [];
    const earlier = ref === "first" ? list[0] : ref === "latest" ? list[list.length - 1] : undefined;
    if (earlier !== undefined) return earlier;
    return {
      instanceId: this.ids(inst),
      taskId,
      workerId: worker,
      claimedAt: 0,
      expiresAt: null,
      token: BOGUS_TOKEN,
    };
  }

  fence(inst: Inst, taskId: string, ref: FenceRef): { taskId: string; token: number } | undefined {
    if (ref === "none") return undefined;
    if (ref === "bogus") return { taskId, token: BOGUS_TOKEN };
    const list = this.claims.get(`${this.ids(inst)}\0${taskId}`);
    if (list === undefined || list.length === 0) return undefined;
    const claim = ref === "latest" ? list[list.length - 1]! : list[0]!;
    return { taskId, token: claim.token };
  }
}

function taskId(t: Task): string {
  return TASKS[t];
}

function outBytes(n: number, tag: number): Uint8Array {
  return Uint8Array.of(n, tag, 255 - n);
}

export function buildSnapshot(instanceId: string, shape: Shape, age: number): WorkflowSnapshot {
  const updatedAt = FUTURE + age * 1000;
  const completed = (done: Task[]) =>
    Object.fromEntries(done.map((t) => [taskId(t), outBytes(t * 10 + age, 1)] as const));
  switch (shape.kind) {
    case "notStarted":
      return inProgress(instanceId, { updatedAt, definitionHash: `h-${age}` });
    case "atTask":
      return atTask(instanceId, taskId(shape.task), {
        updatedAt,
        completed: completed(shape.done),
        definitionHash: `h-${age}`,
        ...(shape.input ? { initialInput: outBytes(age, 9) } : {}),
      });
    case "fork":
      return inProgress(instanceId, {
        updatedAt,
        completed: completed(shape.done),
        position: { kind: "AtFork", branchId: "fork", completedBranches: shape.done.map(taskId) },
      });
    case "completed":
      return {
        ...finished(instanceId, { kind: "Completed", finalOutput: outBytes(shape.out, 2) }),
        updatedAt,
      };
    case "failed":
      return { ...finished(instanceId, { kind: "Failed", error: shape.message }), updatedAt };
  }
}

function normClaim(lane: Lane, claim: TaskClaim | null): unknown {
  if (claim === null) return null;
  return {
    instanceId: claim.instanceId,
    taskId: claim.taskId,
    workerId: claim.workerId,
    claimedAt:
      typeof claim.claimedAt === "number" && Number.isFinite(claim.claimedAt) ? "t" : claim.claimedAt,
    expiresAt: claim.expiresAt === null ? null : typeof claim.expiresAt === "number" ? "t" : claim.expiresAt,
    token: lane.label(claim),
  };
}

const bytes = (b: Uint8Array): unknown => (b instanceof Uint8Array ? Array.from(b) : { notBytes: b });

function normError(error: unknown): unknown {
  if (isPersistenceError(error)) return { error: error.code };
  return {
    error: "UNTYPED",
    detail: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
  };
}

/** Runs one operation on one lane; returns a plain, comparable outcome. */
export async function apply(lane: Lane, op: Op): Promise<unknown> {
  const b = lane.backend;
  const id = (i: Inst) => lane.ids(i);
  try {
    switch (op.op) {
      case "save": {
        const fence = lane.fence(op.inst, taskId(op.fenceTask), op.fence);
        await b.saveSnapshot(
          buildSnapshot(id(op.inst), op.shape, op.age),
          fence ? { claim: fence } : undefined,
        );
        return "ok";
      }
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
      case "load": {
        const s = await b.loadSnapshot(id(op.inst));
        return comparable(s);
      }
      case "delete":
        await b.deleteSnapshot(id(op.inst));
        return "ok";
      case "list": {
        const all = await b.listSnapshots();
        const mine = INSTANCES.map((_, i) => id(i as Inst));
        return all.filter((x) => mine.includes(x)).sort();
      }
      case "claim":
        return normClaim(
          lane,
          await b.claimTask(id(op.inst), taskId(op.task), WORKERS[op.worker], op.ttl ? HOUR : null),
        );
      case "release":
        await b.releaseTaskClaim(id(op.inst), taskId(op.task), WORKERS[op.worker]);
        return "ok";
      case "extend":
        return normClaim(
          lane,
          await b.extendTaskClaim(id(op.inst), taskId(op.task), WORKERS[op.worker], HOUR),
        );
      case "find": {
        const tasks = await b.findAvailableTasks(WORKERS[op.worker], op.limit);
        return tasks.map((t) => ({
          instanceId: t.instanceId,
          taskId: t.taskId,
          input: bytes(t.input),
          hash: t.workflowDefinitionHash,
        }));
      }
      case "claimNext": {
        const tasks = await b.claimAvailableTasks(WORKERS[op.worker], op.limit, op.ttl ? HOUR : null);
        const sorted = [...tasks].sort((x, y) =>
          x.instanceId === y.instanceId
            ? x.taskId < y.taskId
              ? -1
              : 1
            : x.instanceId < y.instanceId
              ? -1
              : 1,
        );
        return sorted.map((t) => ({
          instanceId: t.instanceId,
          taskId: t.taskId,
          input: bytes(t.input),
          hash: t.workflowDefinitionHash,
          claim: normClaim(lane, t.claim),
        }));
      }
      case "complete": {
        const outcomes = await b.completeTasks(
          op.items.map((item) => ({
            claim: lane.completionClaim(item.inst, taskId(item.task), item.fence, WORKERS[item.worker]),
            output: outBytes(item.out, 4),
          })),
        );
        return outcomes.map((o) => (o === null ? "ok" : normError(o)));
      }
      case "race":
        throw new Error("race is applied by runRace");
    }
  } catch (error) {
    return normError(error);
  }
}

/**
 * Three workers claim one task at once through three clients. At most one may win; the model then
 * replays the same claims with the winner first, so both sides continue from the same state.
 */
async function runRace(
  subject: Lane,
  model: Lane,
  op: Extract<Op, { op: "race" }>,
): Promise<[unknown, unknown]> {
  const ttl = op.ttl ? HOUR : null;
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
    claim: wins[0] ? normClaim(subject, wins[0].claim) : null,
  };
  const modelOut = {
    winners: modelWins.length,
    failures: [],
    claim: modelWins[0] ? normClaim(model, modelWins[0]) : null,
  };
  return [subjectOut, modelOut];
}

export interface Mismatch {
  step: number;
  op: Op;
  subject: unknown;
  model: unknown;
}

/** Runs a sequence on both lanes; returns the first divergence, or a token violation, or null. */
export async function runSequence(subject: Lane, model: Lane, ops: Op[]): Promise<Mismatch | string | null> {
  for (let step = 0; step < ops.length; step++) {
    const op = ops[step]!;
    let got: unknown;
    let want: unknown;
    if (op.op === "race") [got, want] = await runRace(subject, model, op);
    else {
      got = await apply(subject, op);
      want = await apply(model, op);
    }
    if (!deepEqual(got, want)) return { step, op, subject: got, model: want };
    if (subject.violations.length > 0) return `${subject.name}: ${subject.violations.join("; ")}`;
  }
  return null;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/**
 * Removes the run's snapshots from the subject (which removes their claims). Ids are unique per
 * run, so claims left on never-created instances cannot meet a later run. True when the store no
 * longer shows anything of this run, so the next run starts from an empty discovery index.
 */
export async function cleanupRun(subject: Lane): Promise<boolean> {
  const ids = INSTANCES.map((_, i) => subject.ids(i as Inst));
  for (const instanceId of ids) {
    await subject.backend.deleteSnapshot(instanceId).catch(() => {});
  }
  const left = (await subject.backend.listSnapshots()).filter((x) => ids.includes(x));
  const ready = await subject.backend.findAvailableTasks("probe", 10);
  return left.length === 0 && ready.length === 0;
}

export function describeOps(ops: Op[]): string {
  return ops.map((o, i) => `${i}: ${JSON.stringify(o)}`).join("\n");
}
