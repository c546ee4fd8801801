import { runEndToEnd } from "@sayiir/worker";
import { describe, expect, it } from "vitest";
import { createSubject, server } from "./subject.js";

// The reference worker loop (tooling/worker): 3 workers, each on its own client of one
// collection prefix, run pipelines and fan-outs while one crashes holding claims; runEndToEnd
// throws on any failed check.
describe.skipIf(server === null)(
  `mongodb (${server?.server ?? "no server"} ${server?.version ?? ""})`,
  () => {
    it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
      const subject = await createSubject();
      try {
        const report = await runEndToEnd({ connect: subject.connect, workflows: 30, leaseMs: 400 });
        expect(report.workflows).toBe(30);
        expect(report.orphaned).toBeGreaterThan(0);
        expect(report.takeovers).toBeGreaterThanOrEqual(1);
        console.log(`mongodb: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`);
      } finally {
        await subject.backend.close();
        await subject.cleanup?.();
      }
    });
  },
);
