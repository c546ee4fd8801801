import { GetItemCommand, QueryCommand, TransactionCanceledException } from "@aws-sdk/client-dynamodb";
import { bytesEqual, ErrorCode, markTaskCompleted, updatePosition } from "@sayiir/persistence-core";
import {
  atTask,
  awaiting,
  expectCode,
  finished,
  patternBytes,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { CHUNK_BYTES, type DynamoDBBackend, TIMER_INDEX } from "../src/index.js";
import { beforeNext, injectErrors, intercept, loseResponses, record } from "./faults.js";
import { freshBackend, freshTable, isChunk, itemsOf, rawHead } from "./helpers.js";
import { server } from "./subject.js";

// What the conformance kit cannot see of events: the event items and the timer index, chunked
// payloads, lost replies of sendEvent, races with the write that makes a wait, request counts.
const info = server();
const MiB = 1024 * 1024;
const T0 = 1_800_000_000_000;
const $metadata = { httpStatusCode: 400 };
const crash = (what: string) =>
  Object.assign(new Error(`injected: ${what}`), { name: "SimulatedCrash", $metadata });

/** Instance ids in the timer index (every shard, due or not). */
async function timers(backend: DynamoDBBackend): Promise<string[]> {
  const ids: string[] = [];
  for (let shard = 0; shard < backend.layout.shards; shard++) {
    const out = await backend.client.send(
      new QueryCommand({
        TableName: backend.tableName,
        IndexName: TIMER_INDEX,
        KeyConditionExpression: "TPK = :p",
        ExpressionAttributeValues: { ":p": { S: backend.layout.timerPk(shard) } },
      }),
    );
    for (const item of out.Items ?? []) ids.push(item.iid?.S ?? "");
  }
  return ids.sort();
}

const commands = (calls: Array<{ command: string }>) => calls.map((c) => c.command.replace("Command", ""));

describe.skipIf(info === null)("events on DynamoDB", () => {
  const ddb = info as NonNullable<typeof info>;

  it("an event is an item under the instance's incarnation; the head counts them; sendEvent costs 2 requests", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "approval", "t2"));
    const calls = record(backend.client);
    const sequence = await backend.sendEvent(id, "approval", text("yes"));
    expect(commands(calls)).toEqual(["GetItem", "TransactWriteItems"]);
    const head = await rawHead(backend, id);
    expect(head.evn?.N).toBe(String(sequence));
    const inc = head.inc?.S ?? "";
    expect(inc).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const eventSk = backend.layout.eventSk(inc, "approval", sequence);
    expect(eventSk).toMatch(new RegExp(`^E#${inc}#[A-Za-z0-9_-]{43}#0{15}1$`));
    const event = await backend.client.send(
      new GetItemCommand({
        TableName: backend.tableName,
        Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: eventSk } },
        ConsistentRead: true,
      }),
    );
    expect(event.Item?.en?.S).toBe("approval");
    expect(event.Item?.seq?.N).toBe("1");
    expect(Array.from(event.Item?.d?.B ?? [])).toEqual(Array.from(text("yes")));
    // The wait became ready in the same write: in the ready partition, not in the timer index.
    expect(head.GPK?.S).toBe(backend.layout.readyPk(backend.layout.shardOf(id)));
    calls.length = 0;
    expect(await backend.loadPendingEvents(id)).toHaveLength(1);
    expect(commands(calls)).toEqual(["GetItem", "Query"]);
    // A re-created instance (new incarnation) never sees the old events, even if their delete was lost.
    injectErrors(backend.client, ["BatchWriteItemCommand"], 100, () => crash("drop events"));
    await backend.deleteSnapshot(id);
    await backend.saveSnapshot(awaiting(id, "approval", "t2"));
    expect((await rawHead(backend, id)).inc?.S).not.toBe(inc);
    expect(await backend.loadPendingEvents(id)).toEqual([]);
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("a 5 MiB event is chunked; consuming it deletes its item and chunks; cleanup keeps pending ones", async () => {
    const backend = await freshBackend({ tableName: await freshTable(ddb) });
    const id = uid();
    const wait = awaiting(id, "big", "t1");
    await backend.saveSnapshot(wait);
    const payload = patternBytes(5 * MiB, 9);
    await backend.sendEvent(id, "big", payload);
    const chunks = (await itemsOf(backend)).filter((i) => isChunk(backend, i));
    expect(chunks).toHaveLength(Math.ceil((5 * MiB) / CHUNK_BYTES));
    // cleanup() must not take the chunks of a pending event for garbage.
    expect(await backend.cleanup({ graceMs: 0 })).toEqual({ deletedItems: 0 });
    const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
    expect(task?.event?.eventName).toBe("big");
    expect(bytesEqual(task?.input ?? new Uint8Array(), payload)).toBe(true);
    if (task === undefined) throw new Error("no task");
    const next = updatePosition(markTaskCompleted(wait, "t1", text("done")), {
      kind: "AtTask",
      taskId: "t2",
    });
    await backend.saveSnapshot(next, { claim: task.claim, consumeEvent: task.event });
    const left = await itemsOf(backend);
    expect(left.filter((i) => isChunk(backend, i))).toEqual([]);
    expect(left.filter((i) => i.sk.startsWith("E#"))).toEqual([]);
  });

  it("a terminal write drops the pending events; cleanup() removes those a failure left behind", async () => {
    const backend = await freshBackend({ tableName: await freshTable(ddb) });
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "e", "t1"));
    await backend.sendEvent(id, "e", patternBytes(400_000, 1)); // chunked
    await backend.sendEvent(id, "other", text("small"));
    const failed = injectErrors(backend.client, ["QueryCommand"], 100, () => crash("drop events"));
    await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text("x") }));
    failed.remaining = 0;
    expect(failed.count).toBeGreaterThan(0);
    expect(await backend.loadPendingEvents(id)).toEqual([]);
    expect((await itemsOf(backend)).filter((i) => i.sk.startsWith("E#"))).toHaveLength(2);
    expect(await backend.cleanup({ graceMs: 0 })).toEqual({ deletedItems: 4 }); // 2 events, 2 chunks
    expect((await itemsOf(backend)).map((i) => i.sk)).toEqual(["H"]);
  });

  it("a wait with a timeout is in the timer index, not the ready index; discovery reads it, not a scan", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 2 });
    const future = Array.from({ length: 20 }, (_, i) => uid(`f${i}`));
    for (const id of future) await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: T0 + 60_000 }));
    const due = uid("due");
    await backend.saveSnapshot(awaiting(due, "e", "t1", { timeoutAt: T0 - 1 }));
    expect(await timers(backend)).toEqual([...future, due].sort());
    expect((await rawHead(backend, due)).GPK).toBeUndefined();
    expect((await rawHead(backend, due)).TSK?.S).toBe(backend.layout.timerSk(T0 - 1, 3, due));
    const calls = record(backend.client);
    const found = await backend.findAvailableTasks("w", 10);
    expect(found.map((t) => [t.instanceId, t.timedOut])).toEqual([[due, true]]);
    // One query per shard of each index and of the leased partitions, then one batch read of the
    // one due candidate's head and claim: the 20 future timers are never read.
    const gets = calls.filter((c) => c.command === "BatchGetItemCommand");
    const keys = gets.flatMap((c) =>
      Object.values((c.input as { RequestItems: Record<string, { Keys: unknown[] }> }).RequestItems).flatMap(
        (r) => r.Keys,
      ),
    );
    expect(keys).toHaveLength(2);
    expect(calls.filter((c) => c.command === "QueryCommand")).toHaveLength(3 * 2);
    // An event moves a wait from the timer index to the ready partition in the same write.
    await backend.sendEvent(future[0] as string, "e", text("go"));
    expect(await timers(backend)).not.toContain(future[0]);
    expect((await rawHead(backend, future[0] as string)).GPK?.S).toMatch(/Q#\d$/);
    // Time passes: every timer is due, in timeoutAt order after the event-ready one (updatedAt T0).
    now = T0 + 60_000;
    const all = await backend.findAvailableTasks("w", 100);
    expect(all).toHaveLength(21);
    expect(all[0]).toMatchObject({ instanceId: future[0], event: { eventName: "e" } });
    expect(all.at(-1)).toMatchObject({ instanceId: future.sort().at(-1), timedOut: true });
  });

  it("a due timer claimed by claim-next is leased (not handed out twice), then back in the timer index", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 1 });
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: T0 - 10 }));
    const [task] = await backend.claimAvailableTasks("w1", 1, 1_000);
    expect(task).toMatchObject({ instanceId: id, timedOut: true });
    expect(await timers(backend)).toEqual([]);
    expect((await rawHead(backend, id)).GPK?.S).toBe(backend.layout.leasedPk(0));
    expect(await backend.claimAvailableTasks("w2", 1, 1_000)).toEqual([]);
    expect(await backend.findAvailableTasks("w2", 10)).toEqual([]);
    // The lease ends (expiresAt + skew budget): handed out again, and moved back to the timer index.
    now += 1_000 + 200;
    expect(await backend.findAvailableTasks("w2", 10)).toMatchObject([{ instanceId: id, timedOut: true }]);
    expect(await timers(backend)).toEqual([id]);
    // Released early: straight back to the timer index.
    const [again] = await backend.claimAvailableTasks("w2", 1, 60_000);
    expect(again?.instanceId).toBe(id);
    await backend.releaseTaskClaim(id, "t1", "w2");
    expect(await timers(backend)).toEqual([id]);
    // An event sent while a timed-out task is leased keeps it leased; once free it runs with the event.
    await backend.claimAvailableTasks("w3", 1, 1_000);
    const sequence = await backend.sendEvent(id, "e", text("late"));
    expect(await backend.findAvailableTasks("w4", 10)).toEqual([]);
    now += 1_000 + 200;
    expect(await backend.findAvailableTasks("w4", 10)).toMatchObject([
      { instanceId: id, event: { eventName: "e", sequence } },
    ]);
  });

  it("a lost reply of sendEvent: retried by the SDK it appends once; not retried it fails, the event stays", async () => {
    const backend = await freshBackend({ conflictRetries: 3 });
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "e", "t1"));
    const retried = loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () =>
      Object.assign(new Error("injected: response lost"), {
        name: "InternalServerError",
        $metadata: { httpStatusCode: 500 },
      }),
    );
    expect(await backend.sendEvent(id, "e", text("one"))).toBe(1);
    expect(retried.count).toBe(1);
    expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([1]);
    // Not retried (a crash after the commit): the caller sees BackendError and cannot know; the
    // event is there (with its chunks), and the next one gets the next sequence.
    loseResponses(backend.client, ["TransactWriteItemsCommand"], 1, () => crash("response lost"));
    const big = patternBytes(700_000, 2);
    await expectCode(backend.sendEvent(id, "e", big), ErrorCode.Backend);
    const pending = await backend.loadPendingEvents(id);
    expect(pending.map((e) => e.sequence)).toEqual([1, 2]);
    expect(bytesEqual(pending[1]?.payload ?? new Uint8Array(), big)).toBe(true);
    expect(await backend.sendEvent(id, "e", text("three"))).toBe(3);
    // Committed, but the client sees a conflict and the adapter sends it again (a fresh request
    // token, so not DynamoDB's idempotency): refused, it recognises its own event by its nonce.
    let fired = false;
    intercept(backend.client, "deserialize", async (call, send) => {
      const out = await send();
      if (call.command === "TransactWriteItemsCommand" && !fired) {
        fired = true;
        throw new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict]",
          $metadata,
          CancellationReasons: [{ Code: "TransactionConflict" }, { Code: "None" }],
        });
      }
      return out;
    });
    expect(await backend.sendEvent(id, "e", text("four"))).toBe(4);
    expect(fired).toBe(true);
    expect((await backend.loadPendingEvents(id)).map((e) => e.sequence)).toEqual([1, 2, 3, 4]);
    // Cancelled for a known reason (a conflict that outlasted the retries): nothing appended, no chunks left.
    injectErrors(
      backend.client,
      ["TransactWriteItemsCommand"],
      1000,
      () =>
        new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict]",
          $metadata,
          CancellationReasons: [{ Code: "TransactionConflict" }, { Code: "None" }],
        }),
    );
    const before = (await itemsOf(backend)).filter((i) => isChunk(backend, i)).length;
    await expectCode(backend.sendEvent(id, "e", big), ErrorCode.Backend);
    expect((await itemsOf(backend)).filter((i) => isChunk(backend, i)).length).toBe(before);
  });

  it("an event sent between the read and the put of the write that makes the wait is not lost", async () => {
    const keyPrefix = uid("ddbx");
    const backend = await freshBackend({ keyPrefix });
    const other = await freshBackend({ keyPrefix });
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t0"));
    const hook = beforeNext(backend.client, "PutItemCommand", async () => {
      await other.sendEvent(id, "e", text("raced"));
    });
    await backend.saveSnapshot(awaiting(id, "e", "t1", { completed: { t0: text("zero") } }));
    expect(hook.fired()).toBe(true);
    expect(await backend.findAvailableTasks("w", 10)).toMatchObject([
      { instanceId: id, taskId: "t1", event: { eventName: "e", sequence: 1 } },
    ]);
  });

  it("a wait's task result taken by saveTaskResult ends the wait: out of the timer index, an event no longer readies it", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(awaiting(id, "e", "t1", { timeoutAt: 1_000 }));
    expect(await timers(backend)).toEqual([id]);
    await backend.saveTaskResult(id, "t1", text("done early"));
    expect(await timers(backend)).toEqual([]);
    const head = await rawHead(backend, id);
    expect([head.ev, head.tmo, head.GPK]).toEqual([undefined, undefined, undefined]);
    await backend.sendEvent(id, "e", text("too late"));
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("a conflict on a consuming write is judged again: the event is consumed once", async () => {
    const backend = await freshBackend();
    const id = uid();
    const wait = awaiting(id, "e", "t1");
    await backend.saveSnapshot(wait);
    await backend.sendEvent(id, "e", text("x"));
    const [task] = await backend.claimAvailableTasks("w", 1, 60_000);
    if (task === undefined) throw new Error("no task");
    let fired = false;
    intercept(backend.client, "deserialize", async (call, send) => {
      const out = await send();
      if (call.command === "TransactWriteItemsCommand" && !fired) {
        fired = true; // committed, but the client sees a conflict and sends it again
        throw new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict]",
          $metadata,
          CancellationReasons: [{ Code: "None" }, { Code: "TransactionConflict" }, { Code: "None" }],
        });
      }
      return out;
    });
    const next = updatePosition(markTaskCompleted(wait, "t1", text("r")), { kind: "AtTask", taskId: "t2" });
    await backend.saveSnapshot(next, { claim: task.claim, consumeEvent: task.event });
    expect(fired).toBe(true);
    expect(await backend.loadPendingEvents(id)).toEqual([]);
    expect((await backend.loadSnapshot(id)).state).toMatchObject({ position: { taskId: "t2" } });
  });
});
