import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { InMemoryBackend } from "@sayiir/persistence-memory";
import { describe, expect, it } from "vitest";
import { runEndToEnd } from "../src/index.ts";

describe("worker loop end to end", () => {
  it("InMemoryBackend: 3 workers, one crashes, every workflow completes once", async () => {
    const root = new InMemoryBackend();
    const report = await runEndToEnd({ connect: () => root.connect(), workflows: 30, leaseMs: 300 });
    expect(report.workflows).toBe(30);
    expect(report.orphaned).toBeGreaterThan(0);
    expect(report.takeovers).toBeGreaterThan(0);
  });

  const sqliteBuilt = existsSync(new URL("../../../packages/sqlite/dist/index.js", import.meta.url));
  it.skipIf(!sqliteBuilt)("SqliteBackend (one file, a connection per worker)", async () => {
    const { SqliteBackend } = await import("@sayiir/persistence-sqlite");
    const dir = mkdtempSync(join(tmpdir(), "sayiir-worker-"));
    const path = join(dir, "e2e.sqlite");
    try {
      const connect = async (): Promise<PersistentBackend> => {
        const backend = new SqliteBackend({ path });
        await backend.migrate();
        return backend;
      };
      const report = await runEndToEnd({ connect, workflows: 30, leaseMs: 400 });
      expect(report.takeovers).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
