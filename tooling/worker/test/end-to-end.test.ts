import { describe, expect, it } from "vitest";
import { runEndToEnd } from "../src/index.ts";
import { BACKENDS } from "./backends.ts";

describe("worker loop end to end", () => {
  it("InMemoryBackend: 3 workers, one crashes, every workflow completes once", async () => {
    const store = await BACKENDS.memory.create({});
    const report = await runEndToEnd({ connect: () => store.connect(), workflows: 30, leaseMs: 300 });
    expect(report.workflows).toBe(30);
    expect(report.orphaned).toBeGreaterThan(0);
    expect(report.takeovers).toBeGreaterThan(0);
  });

  it("SqliteBackend (one file, a connection per worker)", async () => {
    const store = await BACKENDS.sqlite.create({}, { tag: "e2e" });
    try {
      const report = await runEndToEnd({ connect: () => store.connect(), workflows: 30, leaseMs: 400 });
      expect(report.takeovers).toBeGreaterThan(0);
    } finally {
      await store.backend.close();
      await store.cleanup();
    }
  });
});
