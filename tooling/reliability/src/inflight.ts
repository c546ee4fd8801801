// Work in flight when a fault hits: N workers each claim one task and write its result with a
// fenced write, all at once; the fault strikes mid-way. Afterwards every claim and write must be
// whole or absent, and everything acknowledged must be there.
import type { PersistentBackend } from "@sayiir/persistence-core";
import { atTask } from "@sayiir/persistence-core/conformance";
import { expect } from "vitest";
import { outcome } from "./harness.ts";

const bytes = (...v: number[]) => Uint8Array.from(v);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Acked {
  claimed: boolean;
  written: boolean;
  claimToken?: number;
}

export interface InFlightReport {
  written: number;
  claimedOnly: number;
  untouched: number;
  typedFailures: number;
}

/** Polls `loadSnapshot(probeId)` until it works; returns how long it took. */
export async function recover(b: PersistentBackend, probeId: string, withinMs: number): Promise<number> {
  const started = Date.now();
  let last = "";
  while (Date.now() - started < withinMs) {
    last = await outcome(b.loadSnapshot(probeId));
    if (last === "ok") return Date.now() - started;
    await sleep(200);
  }
  throw new Error(`did not recover within ${withinMs} ms after healing (last: ${last})`);
}

/**
 * Seeds `n` instances through `direct`, runs claim + fenced write for each through `b`, calls
 * `fault` after `faultAfterMs`, waits (at most `boundMs` * 2) for every operation to settle, calls
 * `heal`, waits for `b` to recover, then checks the store through `direct`.
 */
export async function inFlightUnderFault(options: {
  b: PersistentBackend;
  direct: () => Promise<PersistentBackend>;
  fault: () => void | Promise<void>;
  heal: () => void | Promise<void>;
  boundMs: number;
  recoveryMs: number;
  n?: number;
  faultAfterMs?: number;
  prefix?: string;
}): Promise<InFlightReport> {
  const { b, boundMs } = options;
  const n = options.n ?? 24;
  const prefix = options.prefix ?? "m";
  const ids = Array.from({ length: n }, (_, k) => `${prefix}-${k}`);
  const seeder = await options.direct();
  for (const id of ids) await seeder.saveSnapshot(atTask(id, "t", { initialInput: bytes(0) }));
  const acked = new Map<string, Acked>();
  const work = ids.map(async (id, k) => {
    const state: Acked = { claimed: false, written: false };
    acked.set(id, state);
    await sleep(k * 3);
    const claim = await b.claimTask(id, "t", `w-${k}`, 60_000);
    if (claim === null) throw new Error(`claim on ${id} refused`);
    state.claimed = true;
    state.claimToken = claim.token;
    await b.saveTaskResult(id, "t", bytes(k, 1), { claim });
    state.written = true;
  });
  const allSettled = Promise.allSettled(work); // handled from now on: no unhandled rejections
  await sleep(options.faultAfterMs ?? 25);
  await options.fault();
  const settled = await Promise.race([allSettled, sleep(boundMs * 2).then(() => "hung" as const)]);
  expect(settled, "in-flight operations must settle").not.toBe("hung");
  const typed = (settled as PromiseSettledResult<void>[]).flatMap((r) =>
    r.status === "rejected" ? [(r.reason as { code?: string }).code ?? String(r.reason)] : [],
  );
  for (const code of typed) expect(["BACKEND"]).toContain(code);
  await options.heal();
  await recover(b, ids[0]!, options.recoveryMs);

  const direct = await options.direct();
  await recover(direct, ids[0]!, options.recoveryMs);
  let written = 0;
  let untouched = 0;
  let claimedOnly = 0;
  const ready = new Set((await direct.findAvailableTasks("probe", 1000)).map((t) => t.instanceId));
  for (const [k, id] of ids.entries()) {
    const s = await direct.loadSnapshot(id);
    if (s.state.kind !== "InProgress") throw new Error("kind changed");
    const result = s.state.completedTasks.t;
    const state = acked.get(id)!;
    if (result !== undefined) {
      // Whole: the exact bytes, lastCompletedTaskId moved, no longer ready.
      expect(Array.from(result.output)).toEqual([k, 1]);
      expect(s.state.lastCompletedTaskId).toBe("t");
      expect(ready.has(id)).toBe(false);
      written++;
    } else {
      expect(state.written, `${id}: an acknowledged write is missing`).toBe(false);
      expect(s.state.lastCompletedTaskId).toBeNull();
      const probe = await direct.claimTask(id, "t", "probe", 60_000);
      if (probe === null) {
        // Claimed (acknowledged or not): it must be that worker's whole claim.
        await direct.releaseTaskClaim(id, "t", `w-${k}`);
        claimedOnly++;
      } else {
        expect(state.claimed, `${id}: an acknowledged claim is missing`).toBe(false);
        expect(probe.token).toBeGreaterThan(state.claimToken ?? 0);
        untouched++;
      }
    }
  }
  return { written, claimedOnly, untouched, typedFailures: typed.length };
}
