import { runEndToEnd } from "@sayiir/worker";
import { expect, it } from "vitest";
import { InMemoryBackend } from "../src/index.js";

// The reference worker loop (tooling/worker): 3 workers, each on its own client of one store,
// run pipelines and fan-outs while one crashes holding claims; runEndToEnd throws on any failed check.
it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
  const store = new InMemoryBackend();
  const report = await runEndToEnd({ connect: () => store.connect(), workflows: 30, leaseMs: 400 });
  expect(report.workflows).toBe(30);
  expect(report.orphaned).toBeGreaterThan(0);
  expect(report.takeovers).toBeGreaterThanOrEqual(1);
  console.log(`memory: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`);
});
