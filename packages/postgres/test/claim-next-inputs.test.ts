import type { PersistentBackend } from "@sayiir/persistence-core";
import { atTask } from "@sayiir/persistence-core/conformance";
import type {} from "@sayiir/test-servers";
import { afterAll, describe, expect, inject, it } from "vitest";
import { closeAdminPools, createSubject, serverName } from "./subject.js";

const servers = inject("postgres");
afterAll(closeAdminPools);

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

// Claim-next claims and reads the input in one statement. Under READ COMMITTED, SKIP LOCKED can
// lock a row that another transaction moved on and committed after the statement's snapshot; the
// input joined from that snapshot would then be the old one. Here writers move instances from t1
// (input: the initial input) to t2 (input: t1's output) with unfenced saveSnapshot calls while
// claimers claim: every claimed task must come with the input of its own position.
describe.skipIf(servers.length === 0)("claim-next inputs under concurrent writers", () => {
  for (const server of servers) {
    it(`${serverName(server)}: a claimed task's input always matches its position`, async () => {
      const subject = await createSubject({}, {}, server);
      const clients: PersistentBackend[] = [subject.backend];
      try {
        for (let i = 0; i < 5; i++) clients.push(await subject.connect());
        const ids = Array.from({ length: 1000 }, (_, i) => `inst-${String(i).padStart(4, "0")}`);
        await Promise.all(
          ids.map((id, i) =>
            subject.backend.saveSnapshot(
              atTask(id, "t1", { updatedAt: 1_000 + i, initialInput: enc(`in-${id}`) }),
            ),
          ),
        );
        let writing = true;
        const writers = [clients[1], clients[2]].map(async (client, w) => {
          for (let i = w; i < ids.length; i += 2) {
            const id = ids[i] as string;
            await client?.saveSnapshot(
              atTask(id, "t2", {
                updatedAt: 1_000 + i,
                initialInput: enc(`in-${id}`),
                completed: { t1: enc(`out-${id}`) },
              }),
            );
          }
        });
        const bad: string[] = [];
        let claimed = 0;
        const claimers = clients.slice(3).map(async (client, w) => {
          while (writing) {
            const got = (await client?.claimAvailableTasks(`w${w}`, 8, 60_000)) ?? [];
            for (const task of got) {
              claimed++;
              const want = task.taskId === "t1" ? `in-${task.instanceId}` : `out-${task.instanceId}`;
              if (dec(task.input) !== want) bad.push(`${task.instanceId}/${task.taskId}: ${dec(task.input)}`);
              await client?.releaseTaskClaim(task.instanceId, task.taskId, `w${w}`);
            }
          }
        });
        await Promise.all(writers);
        writing = false;
        await Promise.all(claimers);
        expect(claimed).toBeGreaterThan(0);
        expect(bad).toEqual([]);
      } finally {
        for (const client of clients.slice(1)) await client.close();
        await subject.backend.close();
        await subject.cleanup?.();
      }
    });
  }
});
