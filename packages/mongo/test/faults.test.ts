// A server that stops answering gives BackendError in bounded time; the backend recovers after.
// Needs a server this tooling started itself (it can pause the process); skipped otherwise.
import { readFile } from "node:fs/promises";
import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, rejection, uid } from "@sayiir/persistence-core/conformance";
import { MongoClient } from "mongodb";
import { describe, expect, it } from "vitest";
import { MongoBackend } from "../src/index.js";
import { DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

const control = server?.control;

/** SIGSTOP is delivered asynchronously: wait until the kernel reports the process stopped. */
async function stopped(pid: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    if (/\) [Tt] /.test(stat)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(control === undefined)("faults (paused server process)", () => {
  it("a paused server gives BackendError within the configured timeouts, and the backend recovers", async () => {
    const url = server?.url ?? "";
    const prefix = freshPrefix();
    const backend = new MongoBackend({
      url,
      database: DATABASE,
      collectionPrefix: prefix,
      clientOptions: { socketTimeoutMS: 1_000, serverSelectionTimeoutMS: 1_000, connectTimeoutMS: 1_000 },
    });
    try {
      await backend.migrate();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      process.kill(-(control?.pgid ?? 0), "SIGSTOP");
      await stopped(control?.pid ?? 0);
      const started = Date.now();
      let error: unknown;
      try {
        error = await rejection(backend.loadSnapshot(id));
      } finally {
        process.kill(-(control?.pgid ?? 0), "SIGCONT");
      }
      expect(error).toMatchObject({ code: ErrorCode.Backend });
      expect(Date.now() - started).toBeLessThan(10_000);
      // Recovers: the next calls work again (the driver reconnects).
      let loaded = false;
      for (let i = 0; i < 50 && !loaded; i++) {
        loaded = await backend.loadSnapshot(id).then(
          () => true,
          async () => {
            await new Promise((r) => setTimeout(r, 200));
            return false;
          },
        );
      }
      expect(loaded).toBe(true);
      expect(await backend.claimTask(id, "t1", "w", 1000)).not.toBeNull();
    } finally {
      await backend.close();
      const client = new MongoClient(url);
      await dropPrefix(client, prefix);
      await client.close();
    }
  }, 60_000);
});
