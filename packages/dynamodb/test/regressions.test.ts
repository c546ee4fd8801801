import { GetItemCommand, TransactionCanceledException } from "@aws-sdk/client-dynamodb";
import { bytesEqual, ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, expectCode, patternBytes, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { barrier, injectErrors, intercept, loseResponses } from "./faults.js";
import { freshBackend, itemsOf } from "./helpers.js";
import { clientConfig, server } from "./subject.js";

// Regression tests for reviewed bugs, each reproduced by making the client see a failure at the
// worst moment (the fault-injection seam of test/faults.ts: an SDK middleware).
const info = server();
const $metadata = { httpStatusCode: 400 };

const crash = (what: string) =>
  Object.assign(new Error(`injected: ${what}`), { name: "SimulatedCrash", $metadata });

const fenceOf = (claim: TaskClaim | null): { claim: TaskClaim } => {
  if (claim === null) throw new Error("expected a claim");
  return { claim };
};

describe.skipIf(info === null)("regressions (reviewed bugs)", () => {
  const ddb = info as NonNullable<typeof info>;

  describe("deleteSnapshot never leaves a pre-delete claim live", () => {
    it("a failed delete leaves the instance and its claims whole; a later delete tombstones them", async () => {
      const backend = await freshBackend();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const a = await backend.claimTask(id, "t1", "A", null);
      const failed = injectErrors(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("delete"));
      await expectCode(backend.deleteSnapshot(id), ErrorCode.Backend);
      expect(failed.count).toBe(1);
      // Nothing applied: the instance is there and A still holds its claim.
      expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
      expect(await backend.claimTask(id, "t1", "B", null)).toBeNull();

      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t1"));
      const b = await backend.claimTask(id, "t1", "B", null);
      expect(b).not.toBeNull();
      await expectCode(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)), ErrorCode.ClaimLost);
      await backend.saveTaskResult(id, "t1", text("from B"), fenceOf(b));
    });

    it("a delete whose response was lost (SDK retry) still tombstones the claims and reports success", async () => {
      const backend = await freshBackend();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.saveSnapshot(atTask(id, "t1")); // a second generation
      const a = await backend.claimTask(id, "t1", "A", null);
      const b2 = await backend.claimTask(id, "t2", "A", 60_000);
      expect(b2).not.toBeNull();
      const lost = loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () =>
        Object.assign(new Error("injected: response lost"), {
          name: "InternalServerError",
          $metadata: { httpStatusCode: 500 },
        }),
      );
      await backend.deleteSnapshot(id);
      expect(lost.count).toBe(1);
      await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);

      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await backend.claimTask(id, "t1", "B", null)).not.toBeNull();
      await expectCode(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)), ErrorCode.ClaimLost);
      expect(await backend.claimTask(id, "t2", "C", null)).not.toBeNull();
    });

    it("a delete whose response was lost (not retried) fails, but leaves no claim live", async () => {
      const backend = await freshBackend();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const a = await backend.claimTask(id, "t1", "A", null);
      loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("response lost"));
      await expectCode(backend.deleteSnapshot(id), ErrorCode.Backend);
      await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);
      // The commit's marker (kept only while a delete is in flight) is left: cleanup() drops it.
      const marker = `${backend.layout.instancePk(id)}|D`;
      expect((await itemsOf(backend)).map((i) => `${i.pk}|${i.sk}`)).toContain(marker);
      expect(await backend.cleanup({ graceMs: 60_000 })).toEqual({ deletedItems: 0 });
      await backend.cleanup({ graceMs: 0 });
      expect((await itemsOf(backend)).map((i) => `${i.pk}|${i.sk}`)).not.toContain(marker);
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await backend.claimTask(id, "t1", "B", null)).not.toBeNull();
      await expectCode(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)), ErrorCode.ClaimLost);
    });

    it("a delete that committed unseen and is sent again never deletes the instance re-created meanwhile", async () => {
      const keyPrefix = uid("ddbx");
      const backend = await freshBackend({ keyPrefix });
      const other = await freshBackend({ keyPrefix }); // its own client: no injection
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(id, "t1", "A", null);
      const recreated = atTask(id, "t9", { initialInput: text("again") });
      let fired = false;
      intercept(backend.client, "deserialize", async (call, send) => {
        const out = await send();
        if (call.command === "TransactWriteItemsCommand" && !fired) {
          fired = true;
          // Committed; before the client hears of it, someone re-creates the instance, and the
          // client sees a conflict, so the adapter sends the delete again (a fresh token).
          await other.saveSnapshot(recreated);
          throw new TransactionCanceledException({
            message: "injected: Transaction cancelled [TransactionConflict]",
            $metadata,
            CancellationReasons: [{ Code: "TransactionConflict" }],
          });
        }
        return out;
      });
      await backend.deleteSnapshot(id);
      expect(fired).toBe(true);
      const loaded = await backend.loadSnapshot(id);
      expect(loaded.state.kind === "InProgress" && loaded.state.position).toEqual({
        kind: "AtTask",
        taskId: "t9",
      });
    });

    it("an instance with more claims than a transaction holds is deleted with every claim tombstoned", async () => {
      const backend = await freshBackend();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t0"));
      const tasks = Array.from({ length: 120 }, (_, i) => `t${i}`);
      const claims = await Promise.all(tasks.map((t) => backend.claimTask(id, t, "A", null)));
      expect(claims.every((c) => c !== null)).toBe(true);
      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t0"));
      for (const t of tasks.slice(0, 5)) expect(await backend.claimTask(id, t, "B", null)).not.toBeNull();
      await expectCode(
        backend.saveTaskResult(id, "t7", text("A"), fenceOf(claims[7] ?? null)),
        ErrorCode.ClaimLost,
      );
    });

    it("a claim taken between reading the claims and the commit makes the delete retry and tombstone it", async () => {
      const backend = await freshBackend();
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(id, "t1", "A", 60_000);
      await backend.releaseTaskClaim(id, "t1", "A");
      // Before the delete's first commit, another worker claims (the tombstone's token changes).
      let sneaked: TaskClaim | null = null;
      intercept(backend.client, "initialize", async (call, send) => {
        if (call.command === "TransactWriteItemsCommand" && sneaked === null) {
          sneaked = await backend.claimTask(id, "t1", "B", null);
        }
        return send();
      });
      await backend.deleteSnapshot(id);
      expect(sneaked).not.toBeNull();
      await backend.saveSnapshot(atTask(id, "t1"));
      await expectCode(backend.saveTaskResult(id, "t1", text("B"), fenceOf(sneaked)), ErrorCode.ClaimLost);
    });
  });

  it("saveTaskResult with an unknown outcome keeps the chunks of a result that did commit", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1", { completed: { t0: text("zero") } }));
    const big = patternBytes(1024 * 1024, 7); // chunked
    const lost = loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () =>
      crash("response lost"),
    );
    await expectCode(backend.saveTaskResult(id, "t1", big), ErrorCode.Backend);
    expect(lost.count).toBe(1);
    const loaded = await backend.loadSnapshot(id);
    expect(loaded.state.kind).toBe("InProgress");
    const output = loaded.state.kind === "InProgress" ? loaded.state.completedTasks.t1?.output : undefined;
    expect(output !== undefined && bytesEqual(output, big)).toBe(true);
  });

  it("saveTaskResult retried after a commit it did not see never deletes its own chunks", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const big = patternBytes(900_000, 3);
    // The commit lands but the client sees a conflict, so the adapter sends the transaction again
    // (a fresh request token). t1 is the position: the commit took the head out of the ready
    // index, so the replay is refused, the adapter re-reads the head and writes a third time, now
    // "replacing" a result that is its own.
    loseResponses(
      backend.client,
      ["TransactWriteItemsCommand"],
      1,
      () =>
        new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict, None]",
          $metadata,
          CancellationReasons: [{ Code: "TransactionConflict" }, { Code: "None" }],
        }),
    );
    await backend.saveTaskResult(id, "t1", big);
    const loaded = await backend.loadSnapshot(id);
    const output = loaded.state.kind === "InProgress" ? loaded.state.completedTasks.t1?.output : undefined;
    expect(output !== undefined && bytesEqual(output, big)).toBe(true);
  });

  it("two concurrent claimTask calls of the same worker in the same millisecond: exactly one wins", async () => {
    const backend = await freshBackend({ clock: () => 1_900_000_000_000 });
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    barrier(backend.client, "PutItemCommand", 2); // both read "no claim" before either writes
    const results = await Promise.all([
      backend.claimTask(id, "t1", "same-worker", null),
      backend.claimTask(id, "t1", "same-worker", null),
    ]);
    expect(results.filter((c) => c !== null)).toHaveLength(1);
    const stored = await backend.client.send(
      new GetItemCommand({
        TableName: backend.tableName,
        Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: backend.layout.claimSk("t1") } },
        ConsistentRead: true,
      }),
    );
    expect(stored.Item?.nc?.S).toBeTypeOf("string");
  });

  it("claimAvailableTasks that fails part-way returns the claims that landed; all failing throws", async () => {
    const backend = await freshBackend();
    const ids = [uid("a"), uid("b"), uid("c")];
    for (const [i, id] of ids.entries())
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: 1000 + i }));
    const one = injectErrors(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("claim"));
    const got = await backend.claimAvailableTasks("w", 3, null);
    expect(one.count).toBe(1);
    expect(got).toHaveLength(2);
    const rest = await backend.findAvailableTasks("w", 10);
    expect(rest).toHaveLength(1);
    expect([...got.map((t) => t.instanceId), rest[0]?.instanceId].sort()).toEqual([...ids].sort());
    // Every claim it returned is live (not orphaned) and usable.
    for (const task of got) await backend.saveTaskResult(task.instanceId, "t1", text("ok"), task);

    const all = injectErrors(backend.client, ["TransactWriteItemsCommand"], 10, () => crash("claim"));
    await expectCode(backend.claimAvailableTasks("w", 3, null), ErrorCode.Backend);
    expect(all.count).toBe(1);
    all.remaining = 0;
    expect(await backend.claimAvailableTasks("w", 3, null)).toHaveLength(1);
  });

  it("credentials given in clientConfig are scrubbed from error messages", async () => {
    const secret = "SECRETsecretSECRET1234567890abcd";
    const scrubbing = await freshBackend({
      clientConfig: {
        ...clientConfig(ddb),
        credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: secret },
      },
    });
    intercept(scrubbing.client, "initialize", async () => {
      throw new Error(`injected: signature mismatch for key ${secret}`);
    });
    const error = await rejection(scrubbing.loadSnapshot(uid()));
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect((error as Error).message).not.toContain(secret);
  });
});
