import type {} from "@sayiir/test-servers";
import { runEndToEnd } from "@sayiir/worker";
import { afterAll, describe, expect, inject, it } from "vitest";
import { closeAdminPools, createSubject, NO_SERVER, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

if (servers.length === 0) {
  it.skip(NO_SERVER, () => {});
}

// The reference worker loop (tooling/worker): 3 workers, each on its own pool over one schema,
// run pipelines and fan-outs while one crashes holding claims; runEndToEnd throws on any failed check.
for (const server of servers) {
  describe(serverName(server), () => {
    it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
      const subject = await createSubject({}, {}, server);
      try {
        const report = await runEndToEnd({ connect: subject.connect, workflows: 30, leaseMs: 400 });
        expect(report.workflows).toBe(30);
        expect(report.orphaned).toBeGreaterThan(0);
        expect(report.takeovers).toBeGreaterThanOrEqual(1);
        console.log(
          `${serverName(server)}: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`,
        );
      } finally {
        await subject.backend.close();
        await subject.cleanup?.();
      }
    });
  });
}
