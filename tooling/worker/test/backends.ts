// The backends of the worker's tests: the registry of @sayiir/backends, loading the adapters from
// their sources (the adapters depend on this package for their end-to-end tests, so depending back
// on their packages would be a cycle; the registry's own source is imported for the same reason).
import { setTimeout as delay } from "node:timers/promises";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { createRegistry } from "../../backends/src/index.ts";

export const BACKENDS = createRegistry({
  prefix: "worker",
  modules: {
    memory: () => import("../../../packages/memory/src/index.ts"),
    sqlite: () => import("../../../packages/sqlite/src/index.ts"),
  },
});

/** A store of one backend: `root` is its first client, `connect()` gives more, `close()` ends all. */
export interface TestStore {
  root: PersistentBackend;
  connect: () => Promise<PersistentBackend>;
  close: () => Promise<void>;
}

/** The stores the loop tests run on: the memory reference and a SQLite file (`tag` names it). */
export function testStores(tag: string): Array<[string, () => Promise<TestStore>]> {
  return [
    [
      "memory",
      async () => {
        const store = await BACKENDS.memory.create({});
        return { root: store.backend, connect: () => store.connect(), close: async () => {} };
      },
    ],
    [
      "sqlite",
      async () => {
        const store = await BACKENDS.sqlite.create({}, { tag });
        const opened: PersistentBackend[] = [];
        return {
          root: store.backend,
          connect: async () => {
            const backend = await store.connect();
            opened.push(backend);
            return backend;
          },
          close: async () => {
            for (const backend of opened) await backend.close();
            await store.backend.close();
            await store.cleanup();
          },
        };
      },
    ],
  ];
}

/** Polls `check` every 10 ms until it holds; throws after `timeoutMs`, naming `what`. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  what = "the condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** A check for waitFor: the workflow `id` is Completed. */
export const completed = (backend: PersistentBackend, id: string) => async () =>
  (await backend.loadSnapshot(id)).state.kind === "Completed";
