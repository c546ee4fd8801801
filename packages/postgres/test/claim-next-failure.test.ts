import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, expectCode, uid } from "@sayiir/persistence-core/conformance";
import { afterAll, describe, expect, it } from "vitest";
import {
  addTrigger,
  closeAdminPools,
  createSubject,
  failStatements,
  serverName,
  servers,
} from "./subject.js";

afterAll(closeAdminPools);

// claimAvailableTasks claims and reads inputs in one statement, so a failure of that statement
// claims nothing. A call that needs several rounds (a candidate lost its claim insert) must not
// lose the claims of the rounds that committed when a later round fails: with no ttl they would
// hide their tasks forever.
for (const server of servers.slice(0, 1)) {
  describe(`claim-next failures: ${serverName(server)}`, () => {
    it("a failing claim-next statement claims nothing", async () => {
      let fail = false;
      const subject = await createSubject({}, { faults: failStatements("claimNext", () => fail) }, server);
      const { backend } = subject;
      try {
        const ids = [uid("a"), uid("b"), uid("c")];
        for (const id of ids) await backend.saveSnapshot(atTask(id, "t1"));
        fail = true;
        await expectCode(backend.claimAvailableTasks("w1", 10, null), ErrorCode.Backend);
        fail = false;
        expect(await backend.claimAvailableTasks("w2", 10, null)).toHaveLength(3);
      } finally {
        await backend.close();
        await subject.cleanup();
      }
    });

    it("a server error inside the statement rolls back every claim of it", async () => {
      const subject = await createSubject({}, {}, server);
      const { backend } = subject;
      try {
        const ids = [uid("a"), uid("b"), uid("c")].sort();
        for (const [i, id] of ids.entries())
          await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1000 + i }));
        // The last candidate's claim (an update of its snapshot row, which holds a claim-next
        // claim) raises: the first two were claimed by the same statement.
        const drop = await addTrigger(
          server.url,
          subject.schema,
          "snapshots",
          ids[2] as string,
          "raise",
          "boom",
          "UPDATE",
        );
        await expectCode(backend.claimAvailableTasks("w1", 10, null), ErrorCode.Backend);
        await drop();
        expect((await backend.claimAvailableTasks("w2", 10, null)).map((t) => t.instanceId)).toEqual(ids);
      } finally {
        await backend.close();
        await subject.cleanup();
      }
    });

    it("a later round failing hands back the claims of the rounds that committed", async () => {
      let calls = 0;
      const subject = await createSubject(
        {},
        { faults: failStatements("claimNext", () => ++calls >= 2) },
        server,
      );
      const { backend } = subject;
      try {
        const [stuck, a, b] = [uid("a-stuck"), uid("b"), uid("c")];
        await backend.saveSnapshot(atTask(stuck, "t1", { updatedAt: 1000 }));
        await backend.saveSnapshot(atTask(a, "t1", { updatedAt: 1001 }));
        await backend.saveSnapshot(atTask(b, "t1", { updatedAt: 1002 }));
        // The oldest candidate's claim (the update of its snapshot row) is silently skipped, as if
        // another worker's claim had won the race: it comes back unclaimed, so the call runs a
        // second round, which fails.
        await addTrigger(server.url, subject.schema, "snapshots", stuck, "skip", "skip", "UPDATE");
        const got = await backend.claimAvailableTasks("w1", 10, null);
        expect(calls).toBe(2);
        expect(got.map((t) => t.instanceId)).toEqual([a, b]);
        // Those claims are live and fence writes.
        for (const task of got) {
          await backend.saveTaskResult(task.instanceId, task.taskId, new Uint8Array([1]), {
            claim: task.claim,
          });
        }
      } finally {
        await backend.close();
        await subject.cleanup();
      }
    });
  });
}
