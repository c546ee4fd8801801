// Scenario 3: the cost of finding and claiming work as the store fills with snapshots that hold no
// task the measured worker may run. The same few ready tasks are present throughout (with the newest
// updatedAt, so a scan in updatedAt order would have to walk past every other snapshot); only the
// count of the others grows. Three shapes of "others": non-ready snapshots (finished, not started,
// at a completed task), tasks scheduled in 2100 (durable sleeps), and ready tasks in another queue.
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import type { BackendTarget, Store } from "./targets.ts";
import { forEachConcurrent, type Summary, summarize } from "./util.ts";
import {
  futureSnapshot,
  nonReadySnapshot,
  otherQueueSnapshot,
  type PreloadResult,
  preload,
  readySnapshot,
} from "./workload.ts";

/** What fills the store around the ready tasks. */
export type DiscoveryShape = "non-ready" | "future" | "other-queue";
export const DISCOVERY_SHAPES: readonly DiscoveryShape[] = ["non-ready", "future", "other-queue"];

const MAKE: Record<DiscoveryShape, (instanceId: string, i: number) => WorkflowSnapshot> = {
  "non-ready": nonReadySnapshot,
  future: futureSnapshot,
  "other-queue": otherQueueSnapshot,
};

export interface DiscoveryOptions {
  shape: DiscoveryShape;
  /** Non-ready snapshots at each measuring point, ascending (e.g. [10_000, 1_000_000]). */
  sizes: number[];
  /** Ready tasks present throughout. */
  ready: number;
  samples: number;
  preloadConcurrency: number;
}

export interface DiscoveryPoint {
  nonReady: number;
  /** Loading the snapshots added since the previous point. */
  load: PreloadResult;
  claim: Summary;
  find: Summary;
}

export interface DiscoveryResult {
  backend: string;
  shape: DiscoveryShape;
  ready: number;
  points: DiscoveryPoint[];
  /** p50 claim latency at the largest size over the smallest. */
  claimRatio: number;
  findRatio: number;
  /** How the non-ready snapshots were loaded. */
  loadedWith: string;
  note?: string;
}

const BULK_CHUNK = 5000;

/**
 * Pre-loads the other snapshots [offset, offset + count): the target's bulk path if it has one
 * (only for non-ready snapshots: scheduled and queued ones go through the adapter, which alone
 * knows how it indexes them).
 */
async function loadOthers(
  target: BackendTarget,
  store: Store,
  backend: PersistentBackend,
  shape: DiscoveryShape,
  offset: number,
  count: number,
  concurrency: number,
): Promise<PreloadResult> {
  const make = (i: number) => MAKE[shape](`other-${i}`, i);
  if (!target.bulkLoad || shape !== "non-ready") return preload(backend, count, make, concurrency, offset);
  const bulk = target.bulkLoad;
  const t0 = performance.now();
  const chunks = Math.ceil(count / BULK_CHUNK);
  await forEachConcurrent(chunks, 2, async (c) => {
    const start = offset + c * BULK_CHUNK;
    const end = Math.min(offset + count, start + BULK_CHUNK);
    const batch = [];
    for (let i = start; i < end; i++) batch.push(make(i));
    await bulk(store.config, batch);
  });
  const ms = performance.now() - t0;
  // The rows must be what the adapter itself reads back.
  for (const i of [offset, offset + Math.floor(count / 2), offset + count - 1]) {
    const expected = make(i);
    const got = await backend.loadSnapshot(expected.instanceId);
    if (got.state.kind !== expected.state.kind || got.updatedAt !== expected.updatedAt) {
      throw new Error(`bulk-loaded snapshot ${expected.instanceId} does not read back as saved`);
    }
  }
  return { count, ms: Math.round(ms), perSecond: Math.round((count / ms) * 1000) };
}

const READY_OFFSET = 2_000_000_000;

async function measure(
  backend: PersistentBackend,
  samples: number,
): Promise<{ claim: Summary; find: Summary }> {
  const worker = "discovery-worker";
  // Warm-up: caches, prepared statements, connections.
  for (let k = 0; k < Math.max(10, Math.min(50, samples / 4)); k++) {
    const [t] = await backend.claimAvailableTasks(worker, 1, 60_000);
    if (t) await backend.releaseTaskClaim(t.instanceId, t.taskId, worker);
    await backend.findAvailableTasks(worker, 10);
  }
  const claim: number[] = [];
  for (let k = 0; k < samples; k++) {
    const t0 = performance.now();
    const [t] = await backend.claimAvailableTasks(worker, 1, 60_000);
    claim.push(performance.now() - t0);
    if (!t) throw new Error("claimAvailableTasks returned nothing although ready tasks exist");
    await backend.releaseTaskClaim(t.instanceId, t.taskId, worker);
  }
  const find: number[] = [];
  for (let k = 0; k < samples; k++) {
    const t0 = performance.now();
    const found = await backend.findAvailableTasks(worker, 10);
    find.push(performance.now() - t0);
    if (found.length === 0) throw new Error("findAvailableTasks returned nothing although ready tasks exist");
  }
  return { claim: summarize(claim), find: summarize(find) };
}

export async function runDiscovery(
  target: BackendTarget,
  o: DiscoveryOptions,
  progress: (message: string) => void,
): Promise<DiscoveryResult> {
  const store = await target.createStore(`disc-${o.shape}`);
  let backend: PersistentBackend | undefined;
  try {
    backend = await store.open(32);
    const b = backend;
    await preload(b, o.ready, (k) => readySnapshot(`ready-${k}`, READY_OFFSET + k), o.preloadConcurrency);
    const points: DiscoveryPoint[] = [];
    let have = 0;
    for (const size of o.sizes) {
      const add = size - have;
      const load = await loadOthers(target, store, b, o.shape, have, add, o.preloadConcurrency);
      have = size;
      progress(
        `${target.name}: ${size.toLocaleString("en-US")} ${o.shape} snapshots (+${add} at ${load.perSecond}/s)`,
      );
      points.push({ nonReady: size, load, ...(await measure(b, o.samples)) });
    }
    const first = points[0]!;
    const last = points[points.length - 1]!;
    return {
      backend: target.name,
      shape: o.shape,
      ready: o.ready,
      points,
      claimRatio: Math.round((last.claim.p50 / first.claim.p50) * 100) / 100,
      findRatio: Math.round((last.find.p50 / first.find.p50) * 100) / 100,
      loadedWith:
        (o.shape === "non-ready" ? target.bulkLoadHow : undefined) ??
        `saveSnapshot through the adapter, ${o.preloadConcurrency} in flight`,
    };
  } finally {
    await backend?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}
