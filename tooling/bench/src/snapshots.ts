// Scenario 4: saveSnapshot / loadSnapshot latency by snapshot size, one call at a time.
import type { PersistentBackend } from "@sayiir/persistence-core";
import type { BackendTarget } from "./targets.ts";
import { type Summary, summarize } from "./util.ts";
import { payloadSnapshot } from "./workload.ts";

export interface SnapshotSizeResult {
  bytes: number;
  save: Summary;
  load: Summary;
}

export interface SnapshotResult {
  backend: string;
  sizes: SnapshotSizeResult[];
}

export async function runSnapshots(
  target: BackendTarget,
  sizes: Array<{ bytes: number; samples: number }>,
): Promise<SnapshotResult> {
  const store = await target.createStore("snap");
  let backend: PersistentBackend | undefined;
  try {
    backend = await store.open(4);
    const out: SnapshotSizeResult[] = [];
    for (const { bytes, samples } of sizes) {
      const ids = Array.from({ length: samples }, (_, k) => `snap-${bytes}-${k}`);
      const snapshots = ids.map((id) => payloadSnapshot(id, bytes));
      // Warm-up on other ids.
      for (let k = 0; k < 3; k++) {
        await backend.saveSnapshot(payloadSnapshot(`warm-${bytes}-${k}`, bytes));
        await backend.loadSnapshot(`warm-${bytes}-${k}`);
      }
      const save: number[] = [];
      for (const s of snapshots) {
        const t0 = performance.now();
        await backend.saveSnapshot(s);
        save.push(performance.now() - t0);
      }
      const load: number[] = [];
      for (const id of ids) {
        const t0 = performance.now();
        const loaded = await backend.loadSnapshot(id);
        load.push(performance.now() - t0);
        const st = loaded.state;
        if (st.kind !== "InProgress" || st.completedTasks["step-1"]?.output.byteLength !== bytes) {
          throw new Error(`loaded snapshot ${id} does not hold its ${bytes}-byte output`);
        }
      }
      out.push({ bytes, save: summarize(save), load: summarize(load) });
    }
    return { backend: target.name, sizes: out };
  } finally {
    await backend?.close().catch(() => undefined);
    await store.drop().catch((e: unknown) => process.stderr.write(`[bench] drop failed: ${String(e)}\n`));
  }
}
