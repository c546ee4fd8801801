import { GetItemCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { ErrorCode, encodeSnapshotHeader } from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { atTask, awaiting, claimOrFail, expectCode, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { beforeNext, record } from "./faults.js";
import { freshBackend } from "./helpers.js";
import { server } from "./subject.js";

// What the conformance kit cannot see of cancel, pause and resume: the revoked claim records,
// the two-step revocation of more claims than a transaction holds, the races each write is
// conditioned against, and what each operation costs in requests.
const info = server();
const T0 = 1_800_000_000_000;
const SKEW = 200;

async function rawItem(backend: DynamoDBBackend, id: string, sk: string) {
  const out = await backend.client.send(
    new GetItemCommand({
      TableName: backend.tableName,
      Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: sk } },
      ConsistentRead: true,
    }),
  );
  return out.Item ?? {};
}

const commands = (calls: Array<{ command: string }>) => calls.map((c) => c.command.replace("Command", ""));

describe.skipIf(info === null)("cancel, pause and resume on DynamoDB", () => {
  it("cancel revokes each claim by its expiry (the epoch), keeping record and token, and checks the tombstone read; 4 requests", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, clockSkewBudgetMs: SKEW });
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const held = await claimOrFail(backend, id, "t1", "w1", 60_000);
    await claimOrFail(backend, id, "side", "w2", null);
    await backend.releaseTaskClaim(id, "side", "w2"); // a tombstone: left alone
    await claimOrFail(backend, id, "other", "w3", null);
    now += 10;
    const calls = record(backend.client);
    await backend.cancelWorkflow(id, { reason: "stop" });
    // The head, then the claims and the position task's result (in parallel), then one transaction.
    expect(commands(calls).sort()).toEqual(["GetItem", "GetItem", "Query", "TransactWriteItems"]);
    const transaction = calls.find((c) => c.command === "TransactWriteItemsCommand")?.input as {
      TransactItems: unknown[];
    };
    // The head, the result check, two held claims' revocations, the tombstone's token check.
    expect(transaction.TransactItems).toHaveLength(1 + 1 + 2 + 1);
    const claim = await rawItem(backend, id, backend.layout.claimSk("t1"));
    expect(claim.tok?.N).toBe(String(held.token));
    expect(claim.w?.S).toBe("w1");
    expect(claim.exp?.N).toBe(String(REVOKED_EXPIRY));
    expect((await rawItem(backend, id, backend.layout.claimSk("other"))).exp?.N).toBe(String(REVOKED_EXPIRY));
    expect((await rawItem(backend, id, backend.layout.claimSk("side"))).w).toBeUndefined();
    // The holder may still release it; others may claim at once, with a larger token.
    await backend.releaseTaskClaim(id, "t1", "w1");
    expect((await claimOrFail(backend, id, "other", "w4", 1_000)).token).toBeGreaterThan(0);
    const head = await rawItem(backend, id, "H");
    expect([head.kind?.S, head.st?.S, head.GPK, head.pos, head.last]).toEqual([
      "Cancelled",
      "F",
      undefined,
      undefined,
      undefined,
    ]);
  });

  it("more claims than a transaction holds are revoked first, then the head cancelled", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t0"));
    const tasks = Array.from({ length: 110 }, (_, i) => `t${i}`);
    const claims = await Promise.all(tasks.map((t) => claimOrFail(backend, id, t, "A", null)));
    await backend.cancelWorkflow(id);
    expect((await backend.loadSnapshot(id)).state).toMatchObject({
      kind: "Cancelled",
      interruptedAtTaskId: "t0",
    });
    for (const i of [0, 57, 109]) {
      const claim = claims[i];
      if (claim === undefined) throw new Error("no claim");
      await expectCode(backend.extendTaskClaim(id, claim.taskId, "A", 60_000), ErrorCode.ClaimLost);
      expect(await backend.completeTasks([{ claim, output: text("late") }])).toMatchObject([
        { code: ErrorCode.ClaimLost },
      ]);
    }
  });

  it("pause costs 2 requests and clears every index entry; resume puts a wait back where it belongs", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 1 });
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: T0 + 5_000 }));
    expect((await rawItem(backend, id, "H")).TPK?.S).toBe(backend.layout.timerPk(0));
    const calls = record(backend.client);
    await backend.pauseWorkflow(id);
    expect(commands(calls)).toEqual(["GetItem", "UpdateItem"]);
    const paused = await rawItem(backend, id, "H");
    expect([paused.kind?.S, paused.st?.S, paused.TPK, paused.GPK, paused.ev, paused.pos]).toEqual([
      "Paused",
      "P",
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
    // Resumed with no event: back in the timer index; due later, handed out timed out.
    now += 10;
    calls.length = 0;
    await backend.resumeWorkflow(id);
    // The head, then the next task's result (and, had an event ever been sent, the awaited events,
    // in parallel), then the write with the check that the next task still has no result.
    expect(commands(calls).sort()).toEqual(["GetItem", "GetItem", "TransactWriteItems"]);
    expect((await rawItem(backend, id, "H")).TSK?.S).toBe(backend.layout.timerSk(T0 + 5_000, 3, id));
    now = T0 + 5_000;
    expect(await backend.findAvailableTasks("w", 10)).toMatchObject([{ instanceId: id, timedOut: true }]);
    // Paused again, sent an event, resumed: in the ready partition (updatedAt = the resume).
    await backend.pauseWorkflow(id);
    await backend.sendEvent(id, "e", text("go"));
    now += 10;
    await backend.resumeWorkflow(id);
    const resumed = await rawItem(backend, id, "H");
    expect([resumed.GPK?.S, resumed.GSK?.S, resumed.TPK]).toEqual([
      backend.layout.readyPk(0),
      backend.layout.readySk(now, 3, id),
      undefined,
    ]);
  });

  it("resume checks, in its write, that the task it readies still has no result", async () => {
    const keyPrefix = uid("ddbx");
    const backend = await freshBackend({ keyPrefix });
    const other = await freshBackend({ keyPrefix });
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const claim = await claimOrFail(backend, id, "t1", "w", 60_000);
    await backend.pauseWorkflow(id);
    // The result lands after resume read "no result" and before its write.
    const hook = beforeNext(backend.client, "TransactWriteItemsCommand", async () => {
      await other.saveTaskResult(id, "t1", text("one"), { claim });
    });
    await backend.resumeWorkflow(id);
    expect(hook.fired()).toBe(true);
    expect((await rawItem(backend, id, "H")).GPK).toBeUndefined();
    expect(await backend.findAvailableTasks("w2", 10)).toEqual([]);
  });

  it("a head written before issue 15 (no status, the initial input inside its header) is controlled without loss", async () => {
    const backend = await freshBackend();
    const id = uid();
    const snapshot = atTask(id, "t1", { initialInput: text("the input") });
    await backend.saveSnapshot(snapshot);
    await backend.client.send(
      new UpdateItemCommand({
        TableName: backend.tableName,
        Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } },
        UpdateExpression: "SET hd = :h REMOVE id, ic, #n, il, kind, inc",
        ExpressionAttributeNames: { "#n": "in" },
        ExpressionAttributeValues: { ":h": { B: encodeSnapshotHeader(snapshot) } },
      }),
    );
    await backend.sendEvent(id, "e", text("kept"));
    await backend.pauseWorkflow(id, { reason: "old" });
    expect((await rawItem(backend, id, "H")).id?.B).toBeDefined();
    await backend.resumeWorkflow(id);
    expect((await backend.findAvailableTasks("w", 10)).map((t) => new TextDecoder().decode(t.input))).toEqual(
      ["the input"],
    );
    expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([1]);
    await backend.cancelWorkflow(id);
    expect(Array.from((await backend.loadSnapshot(id)).initialInput ?? [])).toEqual(
      Array.from(text("the input")),
    );
  });

  it("extendTaskClaim reads the pause state with the claim and checks it in the renewal (3 requests)", async () => {
    const keyPrefix = uid("ddbx");
    const backend = await freshBackend({ keyPrefix });
    const other = await freshBackend({ keyPrefix });
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    await claimOrFail(backend, id, "t1", "w", 60_000);
    const calls = record(backend.client);
    expect((await backend.extendTaskClaim(id, "t1", "w", 60_000)).workflowPaused).toBe(false);
    expect(commands(calls).sort()).toEqual(["GetItem", "GetItem", "TransactWriteItems"]);
    // Paused between the read and the renewal: the renewal is refused, read again, and says paused.
    const hook = beforeNext(backend.client, "TransactWriteItemsCommand", async () => {
      await other.pauseWorkflow(id);
    });
    expect((await backend.extendTaskClaim(id, "t1", "w", 60_000)).workflowPaused).toBe(true);
    expect(hook.fired()).toBe(true);
  });
});
