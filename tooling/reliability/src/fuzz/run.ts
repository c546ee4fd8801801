// Runs a fuzzed sequence on the backend under test and on the memory reference, step by step,
// and compares every outcome; time passes by the rules of clock.ts.
import { apply, runRace, type StepTime } from "./apply.ts";
import type { FuzzClock } from "./clock.ts";
import type { Lane } from "./lane.ts";
import { INSTANCES, type Inst, type Op } from "./ops.ts";

export interface Mismatch {
  step: number;
  op: Op;
  subject: unknown;
  model: unknown;
}

/**
 * Did this step set a workflow's updatedAt from the store's clock? Pause, resume and cancel do; a
 * result does on a workflow they stamped (updatedAt = max(old, now)); a save writes the fuzzer's
 * own time again. Discovery serves ready workflows by updatedAt, so two stamps of one lane must
 * never fall in the same millisecond: a pause of 2 ms after each such step keeps the order of
 * those workflows the order of the steps on every clock. `stamped`: the instances stamped so far.
 */
function stampsClock(op: Op, outcome: unknown, stamped: Set<Inst>): boolean {
  switch (op.op) {
    case "pause":
    case "resume":
    case "cancel":
      if (outcome !== "ok") return false;
      stamped.add(op.inst);
      return true;
    case "save":
    case "delete":
      if (outcome === "ok") stamped.delete(op.inst);
      return false;
    case "result":
      return stamped.has(op.inst);
    case "complete":
      return op.items.some((item) => stamped.has(item.inst));
    default:
      return false;
  }
}

/** A divergence in a step that ran past a pending deadline's guard (clock.ts): no verdict. */
export interface Inconclusive {
  inconclusive: Mismatch;
}

export type SequenceResult = Mismatch | Inconclusive | string | null;

/**
 * Runs a sequence on both lanes; returns the first divergence, or a token violation, or an
 * inconclusive divergence, or null.
 */
export async function runSequence(
  subject: Lane,
  model: Lane,
  ops: Op[],
  clock: FuzzClock,
): Promise<SequenceResult> {
  const stamped = new Set<Inst>();
  clock.begin();
  for (let step = 0; step < ops.length; step++) {
    const op = ops[step]!;
    if (op.op === "elapse") {
      await clock.elapse(false);
      continue;
    }
    if (clock.mustElapse()) await clock.elapse(true);
    const start = clock.time.now();
    const at: StepTime = { soon: clock.soon(start), shortMs: clock.timing.shortMs };
    let got: unknown;
    let want: unknown;
    if (op.op === "race") [got, want] = await runRace(subject, model, op, at);
    else {
      got = await apply(subject, op, at);
      want = await apply(model, op, at);
    }
    const ambiguous = clock.stepped(op, start, clock.time.now());
    if (!deepEqual(got, want)) {
      const mismatch = { step, op, subject: got, model: want };
      if (!ambiguous) return mismatch;
      clock.stats.inconclusive++;
      return { inconclusive: mismatch };
    }
    clock.compared(op, want);
    const violations = [...subject.violations, ...model.violations];
    if (violations.length > 0) return `${subject.name}: ${violations.join("; ")}`;
    if (stampsClock(op, want, stamped)) await clock.time.sleep(2);
  }
  return null;
}

export function isInconclusive(result: SequenceResult): result is Inconclusive {
  return result !== null && typeof result === "object" && "inconclusive" in result;
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
 * Removes the run's snapshots from the subject (which removes their claims and events). Ids are
 * unique per run, so claims left on never-created instances cannot meet a later run. True when the
 * store no longer shows anything of this run, so the next run starts from an empty discovery index.
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
