// What a Redis failover lost, from the workers' recorded history (recorder.ts) and the end state:
// acknowledged results the store forgot (the finished task was claimed again later), fencing
// tokens issued twice for one (instance, task), double holders (a claim granted while another
// acknowledged claim on the task was live: the first one was lost) and fenced-out writes that
// landed. Figures, not verdicts: the failover test asserts them only where the adapter's option
// guarantees them.
import type { RecordedEvent } from "./recorder.ts";
import { analyze } from "./soak/analysis.ts";

export interface LossFigures {
  /** Claims the workers got (acknowledged). */
  claims: number;
  /** Acknowledged task results (completeTasks). */
  results: number;
  /** Acknowledged results whose task was claimed again after the write returned: the store lost them. */
  lostResults: number;
  /** (instance, task, token) triples granted more than once. */
  duplicateTokens: number;
  /** Claims granted while an earlier acknowledged claim on the task was live and not released. */
  doubleHolders: number;
  /** Fenced writes that landed although a newer claim had been granted before they were sent. */
  fencedOutLanded: number;
  violations: string[];
}

export interface EndState {
  /** Acknowledged starts. */
  workflows: number;
  completed: number;
  /** Acknowledged starts whose workflow no longer exists. */
  lostStarts: number;
  /** Acknowledged starts not Completed at the end (lost ones aside). */
  incomplete: number;
  wrongOutput: number;
  endViolations: string[];
}

type Claim = Extract<RecordedEvent, { k: "claim" }>;

export function measureLosses(events: readonly RecordedEvent[]): LossFigures {
  const violations: string[] = [];
  const key = (i: string, t: string) => `${i}/${t}`;
  const claims = new Map<string, Claim[]>();
  for (const e of events) {
    if (e.k !== "claim") continue;
    const list = claims.get(key(e.i, e.t)) ?? [];
    list.push(e);
    claims.set(key(e.i, e.t), list);
  }
  let duplicateTokens = 0;
  for (const [k, list] of claims) {
    const seen = new Set<number>();
    for (const c of list) {
      if (seen.has(c.tok)) {
        duplicateTokens++;
        violations.push(`token ${c.tok} on ${k} granted twice`);
      }
      seen.add(c.tok);
    }
  }
  let results = 0;
  let lostResults = 0;
  for (const e of events) {
    // Results only: a fan-out's join lock ("S:lock") is claimed again and again by design, its
    // fenced writes are snapshots.
    if (e.k !== "write" || e.op !== "result" || !e.ok || e.t === null) continue;
    results++;
    // The workloads here never run a task again once its result is stored (no retries): a claim
    // asked for after the write returned means the store no longer had the result.
    const again = (claims.get(key(e.i, e.t)) ?? []).find((c) => c.q > e.r);
    if (again !== undefined) {
      lostResults++;
      violations.push(
        `result of ${key(e.i, e.t)} (token ${e.tok}, by ${e.w}) lost: claimed again by ${again.w}`,
      );
    }
  }
  const checked = analyze([...events]);
  const doubles = checked.violations.filter((v) => v.startsWith("overlap"));
  const fencedOut = checked.violations.filter((v) => v.startsWith("fenced-out"));
  violations.push(...doubles, ...fencedOut);
  return {
    claims: checked.claims,
    results,
    lostResults,
    duplicateTokens,
    doubleHolders: doubles.length,
    fencedOutLanded: fencedOut.length,
    violations,
  };
}
