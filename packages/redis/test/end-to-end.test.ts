import { runEndToEnd } from "@sayiir/worker";
import { describe, expect, it } from "vitest";
import {
  cluster,
  connection,
  createSubject,
  targets as servers,
  standalone,
  type Target,
} from "./subject.js";

const targets: Array<{ name: string; target: Target | null }> = [
  {
    name: `redis standalone ${standalone?.version ?? "(no server)"}`,
    target: servers.standalone,
  },
  {
    name: `redis cluster ${cluster?.version ?? "(no server)"}, ${cluster?.nodes.length ?? 0} masters`,
    target: servers.cluster,
  },
];

// The reference worker loop (tooling/worker): 3 workers, each on its own client of one key
// prefix, run pipelines and fan-outs while one crashes holding claims; runEndToEnd throws on
// any failed check.
for (const { name, target } of targets) {
  describe.skipIf(target === null)(name, () => {
    if (target === null) return;
    it("worker loop end to end: every workflow completes once, the crashed worker's claims are taken over", async () => {
      const subject = await createSubject({}, connection(target));
      try {
        const report = await runEndToEnd({ connect: subject.connect, workflows: 30, leaseMs: 400 });
        expect(report.workflows).toBe(30);
        expect(report.orphaned).toBeGreaterThan(0);
        expect(report.takeovers).toBeGreaterThanOrEqual(1);
        console.log(`${name}: ${report.workflows} workflows, ${report.takeovers} takeovers, ${report.ms} ms`);
      } finally {
        await subject.backend.close();
        await subject.cleanup?.();
      }
    });
  });
}
