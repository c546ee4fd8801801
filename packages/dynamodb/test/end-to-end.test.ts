import { runEndToEnd } from "@sayiir/worker";
import { describe, expect, it } from "vitest";
import { createSubject, server } from "./subject.js";

const info = server();

// The reference worker loop (tooling/worker): 3 workers, each on its own client of one key
// prefix, run pipelines and fan-outs while one crashes holding claims; runEndToEnd throws on
// any failed check. DynamoDB Local is slow: fewer workflows, more time.
describe.skipIf(info === null)(`dynamodb (${info?.server ?? "no server"} ${info?.version ?? ""})`, () => {
  it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
    const subject = await createSubject();
    try {
      const report = await runEndToEnd({
        connect: subject.connect,
        workflows: 12,
        leaseMs: 600,
        timeoutMs: 100_000,
      });
      expect(report.workflows).toBe(12);
      expect(report.orphaned).toBeGreaterThan(0);
      expect(report.takeovers).toBeGreaterThanOrEqual(1);
      console.log(`dynamodb: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`);
    } finally {
      await subject.backend.close();
      await subject.cleanup?.();
    }
  }, 120_000);
});
