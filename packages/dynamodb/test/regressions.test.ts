import { type DynamoDBClient, GetItemCommand, TransactionCanceledException } from "@aws-sdk/client-dynamodb";
import { bytesEqual, ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, patternBytes, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it, onTestFinished } from "vitest";
import { freshBackend, injectErrors, itemsOf } from "./helpers.js";
import { clientConfig, server } from "./subject.js";

// Regression tests for reviewed bugs, each reproduced by making the client see a failure at the
// worst moment (an SDK middleware, as in injected-errors.test.ts).
const info = server();
const $metadata = { httpStatusCode: 400 };

const crash = (what: string) =>
  Object.assign(new Error(`injected: ${what}`), { name: "SimulatedCrash", $metadata });

/**
 * Lets the next `times` calls of the given commands REACH the server, then throws `makeError()`
 * instead of returning the response: a write that applied but whose response was lost. A 5xx
 * error is retried by the SDK (the same request again), a 400 one is not.
 */
function loseResponses(
  client: DynamoDBClient,
  commands: string[],
  times: number,
  makeError: () => Error,
): { count: number } {
  const state = { count: 0, remaining: times };
  const name = `lose-${Math.random().toString(36).slice(2)}`;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      if (state.remaining > 0 && commands.includes(String(context.commandName))) {
        state.remaining--;
        state.count++;
        throw makeError();
      }
      return out;
    },
    { step: "deserialize", name },
  );
  onTestFinished(() => {
    client.middlewareStack.remove(name);
  });
  return state;
}

/** Holds the calls of `command` until `parties` of them are waiting, then lets them all go. */
function barrier(client: DynamoDBClient, command: string, parties: number): void {
  let waiting = 0;
  let release: () => void = () => undefined;
  const all = new Promise<void>((resolve) => {
    release = resolve;
  });
  const name = `barrier-${Math.random().toString(36).slice(2)}`;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (String(context.commandName) === command && waiting < parties) {
        waiting++;
        if (waiting === parties) release();
        await all;
      }
      return next(args);
    },
    { step: "deserialize", name },
  );
  onTestFinished(() => {
    client.middlewareStack.remove(name);
  });
}

const fenceOf = (claim: TaskClaim | null): { claim: TaskClaim } => {
  if (claim === null) throw new Error("expected a claim");
  return { claim };
};

describe.skipIf(info === null)("regressions (reviewed bugs)", () => {
  const ddb = info as NonNullable<typeof info>;

  describe("deleteSnapshot never leaves a pre-delete claim live", () => {
    it("a failed delete leaves the instance and its claims whole; a later delete tombstones them", async () => {
      const backend = await freshBackend(ddb);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const a = await backend.claimTask(id, "t1", "A", null);
      const failed = injectErrors(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("delete"));
      expect(await rejection(backend.deleteSnapshot(id))).toMatchObject({ code: ErrorCode.Backend });
      expect(failed.count).toBe(1);
      // Nothing applied: the instance is there and A still holds its claim.
      expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
      expect(await backend.claimTask(id, "t1", "B", null)).toBeNull();

      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t1"));
      const b = await backend.claimTask(id, "t1", "B", null);
      expect(b).not.toBeNull();
      expect(await rejection(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      await backend.saveTaskResult(id, "t1", text("from B"), fenceOf(b));
    });

    it("a delete whose response was lost (SDK retry) still tombstones the claims and reports success", async () => {
      const backend = await freshBackend(ddb);
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
      expect(await rejection(backend.loadSnapshot(id))).toMatchObject({ code: ErrorCode.NotFound });

      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await backend.claimTask(id, "t1", "B", null)).not.toBeNull();
      expect(await rejection(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
      expect(await backend.claimTask(id, "t2", "C", null)).not.toBeNull();
    });

    it("a delete whose response was lost (not retried) fails, but leaves no claim live", async () => {
      const backend = await freshBackend(ddb);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      const a = await backend.claimTask(id, "t1", "A", null);
      loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("response lost"));
      expect(await rejection(backend.deleteSnapshot(id))).toMatchObject({ code: ErrorCode.Backend });
      expect(await rejection(backend.loadSnapshot(id))).toMatchObject({ code: ErrorCode.NotFound });
      // The commit's marker (kept only while a delete is in flight) is left: cleanup() drops it.
      const marker = `${backend.layout.instancePk(id)}|D`;
      expect((await itemsOf(backend)).map((i) => `${i.pk}|${i.sk}`)).toContain(marker);
      expect(await backend.cleanup({ graceMs: 60_000 })).toEqual({ deletedItems: 0 });
      await backend.cleanup({ graceMs: 0 });
      expect((await itemsOf(backend)).map((i) => `${i.pk}|${i.sk}`)).not.toContain(marker);
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await backend.claimTask(id, "t1", "B", null)).not.toBeNull();
      expect(await rejection(backend.saveTaskResult(id, "t1", text("from A"), fenceOf(a)))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    });

    it("a delete that committed unseen and is sent again never deletes the instance re-created meanwhile", async () => {
      const keyPrefix = uid("ddbx");
      const backend = await freshBackend(ddb, { keyPrefix });
      const other = await freshBackend(ddb, { keyPrefix }); // its own client: no injection
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(id, "t1", "A", null);
      const recreated = atTask(id, "t9", { initialInput: text("again") });
      const name = "recreate";
      let fired = false;
      backend.client.middlewareStack.add(
        (next, context) => async (args) => {
          const out = await next(args);
          if (String(context.commandName) === "TransactWriteItemsCommand" && !fired) {
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
        },
        { step: "deserialize", name },
      );
      onTestFinished(() => {
        backend.client.middlewareStack.remove(name);
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
      const backend = await freshBackend(ddb);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t0"));
      const tasks = Array.from({ length: 120 }, (_, i) => `t${i}`);
      const claims = await Promise.all(tasks.map((t) => backend.claimTask(id, t, "A", null)));
      expect(claims.every((c) => c !== null)).toBe(true);
      await backend.deleteSnapshot(id);
      await backend.saveSnapshot(atTask(id, "t0"));
      for (const t of tasks.slice(0, 5)) expect(await backend.claimTask(id, t, "B", null)).not.toBeNull();
      expect(
        await rejection(backend.saveTaskResult(id, "t7", text("A"), fenceOf(claims[7] ?? null))),
      ).toMatchObject({ code: ErrorCode.ClaimLost });
    });

    it("a claim taken between reading the claims and the commit makes the delete retry and tombstone it", async () => {
      const backend = await freshBackend(ddb);
      const id = uid();
      await backend.saveSnapshot(atTask(id, "t1"));
      await backend.claimTask(id, "t1", "A", 60_000);
      await backend.releaseTaskClaim(id, "t1", "A");
      // Before the delete's first commit, another worker claims (the tombstone's token changes).
      let sneaked: TaskClaim | null = null;
      const name = "sneak";
      backend.client.middlewareStack.add(
        (next, context) => async (args) => {
          if (String(context.commandName) === "TransactWriteItemsCommand" && sneaked === null) {
            sneaked = await backend.claimTask(id, "t1", "B", null);
          }
          return next(args);
        },
        { step: "initialize", name },
      );
      onTestFinished(() => {
        backend.client.middlewareStack.remove(name);
      });
      await backend.deleteSnapshot(id);
      expect(sneaked).not.toBeNull();
      await backend.saveSnapshot(atTask(id, "t1"));
      expect(await rejection(backend.saveTaskResult(id, "t1", text("B"), fenceOf(sneaked)))).toMatchObject({
        code: ErrorCode.ClaimLost,
      });
    });
  });

  it("saveTaskResult with an unknown outcome keeps the chunks of a result that did commit", async () => {
    const backend = await freshBackend(ddb);
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1", { completed: { t0: text("zero") } }));
    const big = patternBytes(1024 * 1024, 7); // chunked
    const lost = loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () =>
      crash("response lost"),
    );
    expect(await rejection(backend.saveTaskResult(id, "t1", big))).toMatchObject({ code: ErrorCode.Backend });
    expect(lost.count).toBe(1);
    const loaded = await backend.loadSnapshot(id);
    expect(loaded.state.kind).toBe("InProgress");
    const output = loaded.state.kind === "InProgress" ? loaded.state.completedTasks.t1?.output : undefined;
    expect(output !== undefined && bytesEqual(output, big)).toBe(true);
  });

  it("saveTaskResult retried after a commit it did not see never deletes its own chunks", async () => {
    const backend = await freshBackend(ddb);
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
    const backend = await freshBackend(ddb, { clock: () => 1_900_000_000_000 });
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
    const backend = await freshBackend(ddb);
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
    expect(await rejection(backend.claimAvailableTasks("w", 3, null))).toMatchObject({
      code: ErrorCode.Backend,
    });
    expect(all.count).toBe(1);
    all.remaining = 0;
    expect(await backend.claimAvailableTasks("w", 3, null)).toHaveLength(1);
  });

  it("credentials given in clientConfig are scrubbed from error messages", async () => {
    const secret = "SECRETsecretSECRET1234567890abcd";
    const scrubbing = await freshBackend(ddb, {
      clientConfig: {
        ...clientConfig(ddb),
        credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: secret },
      },
    });
    const name = "leak";
    scrubbing.client.middlewareStack.add(
      () => async () => {
        throw new Error(`injected: signature mismatch for key ${secret}`);
      },
      { step: "initialize", name },
    );
    const error = await rejection(scrubbing.loadSnapshot(uid()));
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect((error as Error).message).not.toContain(secret);
  });
});
