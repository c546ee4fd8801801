import { runEndToEnd } from "@sayiir/worker";
import { expect, it } from "vitest";
import { createSubject } from "./subject.js";

// The reference worker loop (tooling/worker): 3 workers, each on its own connection to one
// database file, run pipelines and fan-outs while one crashes holding claims; runEndToEnd
// throws on any failed check.
it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
  const subject = await createSubject();
  try {
    const report = await runEndToEnd({ connect: subject.connect, workflows: 30, leaseMs: 400 });
    expect(report.workflows).toBe(30);
    expect(report.orphaned).toBeGreaterThan(0);
    expect(report.takeovers).toBeGreaterThanOrEqual(1);
    console.log(`sqlite: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`);
  } finally {
    await subject.backend.close();
    await subject.cleanup();
  }
}, 60_000);
