import { describe, expect, it } from "vitest";
import type { PersistentBackend } from "../../backend.js";
import { ErrorCode } from "../../errors.js";
import { atTask } from "../fixtures.js";
import { text, uid, useSubject } from "../harness.js";
import type { ConformanceOptions } from "../types.js";

async function clientsOf(
  subject: { backend: PersistentBackend; connect: () => Promise<PersistentBackend> },
  n: number,
): Promise<PersistentBackend[]> {
  const clients = [subject.backend];
  while (clients.length < n) clients.push(await subject.connect());
  return clients;
}

export function concurrencyGroup(options: ConformanceOptions): void {
  const timeout = options.slowTestTimeoutMs ?? 60_000;
  describe("concurrency", () => {
    it(
      "50 concurrent saveTaskResult calls on distinct tasks of one instance all land",
      async () => {
        const subject = await useSubject(options);
        const clients = await clientsOf(subject, 4);
        const id = uid();
        await subject.backend.saveSnapshot(atTask(id, "task-0"));
        await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            clients[i % clients.length]!.saveTaskResult(id, `task-${i}`, text(`out-${i}`)),
          ),
        );
        const loaded = await subject.backend.loadSnapshot(id);
        expect(loaded.state.kind).toBe("InProgress");
        if (loaded.state.kind !== "InProgress") return;
        expect(Object.keys(loaded.state.completedTasks)).toHaveLength(50);
        for (let i = 0; i < 50; i++) {
          expect(new TextDecoder().decode(loaded.state.completedTasks[`task-${i}`]?.output)).toBe(`out-${i}`);
        }
        expect(loaded.state.lastCompletedTaskId).toMatch(/^task-\d+$/);
      },
      timeout,
    );

    it(
      "20 claimers on separate clients, over 10 tasks: exactly one winner per task",
      async () => {
        const subject = await useSubject(options);
        const clients = await clientsOf(subject, 4);
        const id = uid();
        const attempts = [];
        for (let t = 0; t < 10; t++) {
          for (let w = 0; w < 20; w++) {
            attempts.push(clients[w % clients.length]!.claimTask(id, `t${t}`, `worker-${w}`, 60_000));
          }
        }
        const results = await Promise.all(attempts);
        const winners = results.filter((c) => c !== null);
        expect(winners).toHaveLength(10);
        expect(new Set(winners.map((c) => c?.taskId)).size).toBe(10);
      },
      timeout,
    );

    it(
      "racing fenced writers: only the holder of the live claim ever lands",
      async () => {
        const subject = await useSubject(options);
        const clients = await clientsOf(subject, 3);
        const id = uid();
        await subject.backend.saveSnapshot(atTask(id, "t1"));
        const stale = await subject.backend.claimTask(id, "t1", "stale-worker", 100);
        if (stale === null) throw new Error("claim failed");
        let live = null;
        while (live === null) live = await subject.backend.claimTask(id, "t1", "live-worker", 60_000);
        const results = await Promise.allSettled(
          Array.from({ length: 30 }, (_, i) =>
            clients[i % clients.length]!.saveTaskResult(id, "t1", text(i % 2 === 0 ? "live" : "stale"), {
              claim: i % 2 === 0 ? live : stale,
            }),
          ),
        );
        for (const [i, r] of results.entries()) {
          if (i % 2 === 0) expect(r.status).toBe("fulfilled");
          else
            expect(r.status === "rejected" && (r.reason as { code?: string }).code).toBe(ErrorCode.ClaimLost);
        }
        const loaded = await subject.backend.loadSnapshot(id);
        expect(
          loaded.state.kind === "InProgress" &&
            new TextDecoder().decode(loaded.state.completedTasks.t1?.output),
        ).toBe("live");
      },
      timeout,
    );

    it(
      "concurrent snapshot writers on many instances and a reader see only whole snapshots",
      async () => {
        const subject = await useSubject(options);
        const clients = await clientsOf(subject, 3);
        const ids = Array.from({ length: 12 }, () => uid());
        await Promise.all(
          ids.flatMap((id, i) =>
            Array.from({ length: 4 }, (_, v) =>
              clients[(i + v) % clients.length]!.saveSnapshot(
                atTask(id, `t${v}`, {
                  completed: { [`r${v}`]: text(`v${v}`) },
                  updatedAt: 1_700_000_000_000 + v,
                }),
              ),
            ),
          ),
        );
        for (const id of ids) {
          const loaded = await subject.backend.loadSnapshot(id);
          if (loaded.state.kind !== "InProgress" || loaded.state.position.kind !== "AtTask")
            throw new Error("bad state");
          const v = loaded.state.position.taskId.slice(1);
          // Position and results come from the same write: never a mix of two versions.
          expect(Object.keys(loaded.state.completedTasks)).toEqual([`r${v}`]);
          expect(loaded.updatedAt).toBe(1_700_000_000_000 + Number(v));
        }
      },
      timeout,
    );
  });
}
