// Scenario 7: operating a store. Two costs that must not grow with what the call does not need:
// - loadTaskResult of a 1 KiB output beside 40 MiB of other outputs, against the same read beside
//   nothing (a read that loaded the snapshot would pay for the 40 MiB);
// - purgeFinished of 100 finished workflows as the store fills with unfinished ones (a purge that
//   scanned would pay for every unfinished workflow).
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import type { BackendTarget } from "./targets.ts";
import { forEachConcurrent, type Summary, summarize } from "./util.ts";
import { DEFINITION_HASH, futureSnapshot, type PreloadResult, preload } from "./workload.ts";

export interface OperationsOptions {
  /** Size of each of the four big outputs beside the small one (4 x 10 MiB: 40 MiB). */
  bigOutputBytes: number;
  /** Unfinished workflows at each purge measuring point, ascending. */
  purgeSizes: number[];
  /** loadTaskResult samples per case. */
  samples: number;
  /** purgeFinished calls (of 100 each) per point. */
  purgeCalls: number;
  preloadConcurrency: number;
}

export interface OperationsResult {
  backend: string;
  read: {
    /** Bytes of the other outputs of the big workflow. */
    besideBytes: number;
    small: Summary;
    big: Summary;
    /** loadSnapshot of the big workflow, for scale. */
    snapshot: Summary;
    /** p50 beside the big outputs over p50 beside none. */
    ratio: number;
  };
  purge: {
    points: Array<{ unfinished: number; load: PreloadResult; call: Summary }>;
    /** p50 of one purgeFinished(100) at the largest size over the smallest. */
    ratio: number;
  };
}

const SMALL_TASK = "summary";
const PURGE_LIMIT = 100;

function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** InProgress at "next", with the small output and, beside it, `big` outputs of `bytes` each. */
function resultsSnapshot(instanceId: string, big: number, bytes: number): WorkflowSnapshot {
  const completedTasks: Record<string, { taskId: string; output: Uint8Array }> = {
    [SMALL_TASK]: { taskId: SMALL_TASK, output: pattern(1024, 1) },
  };
  for (let k = 0; k < big; k++)
    completedTasks[`part-${k}`] = { taskId: `part-${k}`, output: pattern(bytes, k) };
  return {
    instanceId,
    definitionHash: DEFINITION_HASH,
    state: {
      kind: "InProgress",
      position: { kind: "AtTask", taskId: "next" },
      completedTasks,
      lastCompletedTaskId: SMALL_TASK,
    },
    createdAt: Date.UTC(2026, 0, 1),
    updatedAt: Date.UTC(2026, 0, 1),
  };
}

function finishedSnapshot(instanceId: string): WorkflowSnapshot {
  return {
    instanceId,
    definitionHash: DEFINITION_HASH,
    state: { kind: "Completed", finalOutput: pattern(64, 3) },
    createdAt: Date.UTC(2026, 0, 1),
    updatedAt: Date.UTC(2026, 0, 1),
  };
}

async function sample(samples: number, call: () => Promise<unknown>): Promise<Summary> {
  const times: number[] = [];
  for (let k = 0; k < samples; k++) {
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  return summarize(times);
}

async function measureReads(b: PersistentBackend, o: OperationsOptions): Promise<OperationsResult["read"]> {
  await b.saveSnapshot(resultsSnapshot("reads-small", 0, 0));
  await b.saveSnapshot(resultsSnapshot("reads-big", 4, o.bigOutputBytes));
  const read = (id: string) => async () => {
    const output = await b.loadTaskResult(id, SMALL_TASK);
    if (output?.byteLength !== 1024)
      throw new Error(`loadTaskResult(${id}) returned ${output?.byteLength} bytes`);
  };
  // Warm-up: connections, prepared statements, caches.
  await sample(10, read("reads-small"));
  await sample(10, read("reads-big"));
  const small = await sample(o.samples, read("reads-small"));
  const big = await sample(o.samples, read("reads-big"));
  const snapshot = await sample(3, () => b.loadSnapshot("reads-big"));
  return {
    besideBytes: 4 * o.bigOutputBytes,
    small,
    big,
    snapshot,
    ratio: Math.round((big.p50 / small.p50) * 100) / 100,
  };
}

async function measurePurge(
  b: PersistentBackend,
  o: OperationsOptions,
  progress: (message: string) => void,
  name: string,
): Promise<OperationsResult["purge"]> {
  const points: OperationsResult["purge"]["points"] = [];
  let have = 0;
  let round = 0;
  for (const size of o.purgeSizes) {
    const load = await preload(
      b,
      size - have,
      (i) => futureSnapshot(`unfinished-${i}`, i),
      o.preloadConcurrency,
      have,
    );
    have = size;
    progress(`${name}: ${size.toLocaleString("en-US")} unfinished workflows (+ at ${load.perSecond}/s)`);
    const finished = o.purgeCalls * PURGE_LIMIT;
    round++;
    await forEachConcurrent(finished, o.preloadConcurrency, (i) =>
      b.saveSnapshot(finishedSnapshot(`finished-${round}-${i}`)),
    );
    const before = Date.now() + 60_000;
    const call = await sample(o.purgeCalls, async () => {
      const purged = await b.purgeFinished({ finishedBefore: before, limit: PURGE_LIMIT });
      if (purged !== PURGE_LIMIT) throw new Error(`purgeFinished deleted ${purged}, expected ${PURGE_LIMIT}`);
    });
    if ((await b.purgeFinished({ finishedBefore: before, limit: PURGE_LIMIT })) !== 0) {
      throw new Error("purgeFinished left finished workflows behind");
    }
    points.push({ unfinished: size, load, call });
  }
  const first = points[0]!;
  const last = points.at(-1)!;
  return { points, ratio: Math.round((last.call.p50 / first.call.p50) * 100) / 100 };
}

export async function runOperations(
  target: BackendTarget,
  o: OperationsOptions,
  progress: (message: string) => void,
): Promise<OperationsResult> {
  const store = await target.createStore("ops");
  let backend: PersistentBackend | undefined;
  try {
    backend = await store.open(16);
    const read = await measureReads(backend, o);
    progress(
      `${target.name}: loadTaskResult p50 ${read.small.p50} ms beside nothing, ${read.big.p50} ms beside ${read.besideBytes} bytes`,
    );
    const purge = await measurePurge(backend, o, progress, target.name);
    return { backend: target.name, read, purge };
  } finally {
    await backend?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}
