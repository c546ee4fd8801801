import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PersistentBackend } from "@sayiir/persistence-core";
import { describe, expect, it } from "vitest";
// The adapters depend on this package (their end-to-end tests), so it tests against their sources, not their packages.
import { InMemoryBackend } from "../../../packages/memory/src/index.ts";
import { SqliteBackend } from "../../../packages/sqlite/src/index.ts";
import { runEndToEnd } from "../src/index.ts";

describe("worker loop end to end", () => {
  it("InMemoryBackend: 3 workers, one crashes, every workflow completes once", async () => {
    const root = new InMemoryBackend();
    const report = await runEndToEnd({ connect: () => root.connect(), workflows: 30, leaseMs: 300 });
    expect(report.workflows).toBe(30);
    expect(report.orphaned).toBeGreaterThan(0);
    expect(report.takeovers).toBeGreaterThan(0);
  });

  it("SqliteBackend (one file, a connection per worker)", async () => {
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
