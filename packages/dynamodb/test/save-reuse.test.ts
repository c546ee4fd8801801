// saveSnapshot does not write again a large output that did not change: its new result item
// points at the chunk set of the current one (told unchanged by length and SHA-256), conditioned
// on that item still pointing there, and on the generation it was decided on.
import { GetItemCommand, PutItemCommand, type WriteRequest } from "@aws-sdk/client-dynamodb";
import { bytesEqual, type WorkflowSnapshot } from "@sayiir/persistence-core";
import { atTask, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { CHUNK_BYTES, type DynamoDBBackend } from "../src/index.js";
import { type Call, intercept, record } from "./faults.js";
import { freshBackend, freshTable, isChunk, itemsOf, rawHead } from "./helpers.js";
import { server } from "./subject.js";

const info = server();

/** Chunk items put by the recorded BatchWriteItem calls. */
function chunkPuts(backend: DynamoDBBackend, seen: Call[]): number {
  return seen
    .filter((c) => c.command === "BatchWriteItemCommand")
    .flatMap((c) => Object.values(c.input.RequestItems as Record<string, WriteRequest[]>).flat())
    .filter((r) => r.PutRequest?.Item?.PK?.S?.startsWith(`${backend.layout.base}C#`)).length;
}

async function outputOf(backend: DynamoDBBackend, id: string, taskId: string): Promise<Uint8Array> {
  const state = (await backend.loadSnapshot(id)).state;
  if (state.kind !== "InProgress") throw new Error("not InProgress");
  return state.completedTasks[taskId]?.output ?? new Uint8Array();
}

/** Runs `hook` once, before the save's commit (its head's put, alone or in a transaction). */
function beforeCommit(backend: DynamoDBBackend, hook: () => Promise<void>): { fired: () => boolean } {
  let fired = false;
  intercept(backend.client, "initialize", async (call, send) => {
    if (!fired && (call.command === "PutItemCommand" || call.command === "TransactWriteItemsCommand")) {
      fired = true;
      await hook();
    }
    return send();
  });
  return { fired: () => fired };
}

const big = (seed: number) => patternBytes(700_000, seed);
const chunksOf = (bytes: number) => Math.ceil(bytes / CHUNK_BYTES);

describe.skipIf(info === null)("saveSnapshot reuses unchanged large outputs", () => {
  it("an unchanged chunked output is not written again; a changed one is; nothing is left behind", async () => {
    if (info === null) return;
    const backend = await freshBackend({ tableName: await freshTable(info) });
    const id = uid();
    const first: WorkflowSnapshot = atTask(id, "t3", { completed: { t1: big(1), t2: big(2) } });
    await backend.saveSnapshot(first);
    const seen = record(backend.client);
    await backend.saveSnapshot(atTask(id, "t4", { completed: { t1: big(1), t2: big(9), t3: text("x") } }));
    // t2 changed: its chunks are written; t1's are not (one projected Query found them).
    expect(chunkPuts(backend, seen)).toBe(chunksOf(700_000));
    expect(seen.filter((c) => c.command === "QueryCommand").length).toBeGreaterThanOrEqual(1);
    expect(bytesEqual(await outputOf(backend, id, "t1"), big(1))).toBe(true);
    expect(bytesEqual(await outputOf(backend, id, "t2"), big(9))).toBe(true);
    // The old generation went, its t2 chunks too; t1's chunk set is the new generation's now.
    const chunks = (await itemsOf(backend)).filter((i) => isChunk(backend, i));
    expect(chunks).toHaveLength(2 * chunksOf(700_000));
    expect(await backend.cleanup({ graceMs: 0 })).toEqual({ deletedItems: 0 });
    // A result written by completeTasks carries the hash too: the next save reuses it.
    const claim = await backend.claimTask(id, "t4", "w", 60_000);
    if (claim === null) throw new Error("not claimed");
    expect(await backend.completeTasks([{ claim, output: big(4) }])).toEqual([null]);
    const again = record(backend.client);
    await backend.saveSnapshot(
      atTask(id, "t5", { completed: { t1: big(1), t2: big(9), t3: text("x"), t4: big(4) } }),
    );
    expect(chunkPuts(backend, again)).toBe(0);
    expect(bytesEqual(await outputOf(backend, id, "t4"), big(4))).toBe(true);
  });

  it("a reused result replaced before the save commits (saveTaskResult): the save writes it after all", async () => {
    const keyPrefix = uid("ddbr");
    const a = await freshBackend({ keyPrefix });
    const b = await freshBackend({ keyPrefix });
    const id = uid();
    await a.saveSnapshot(atTask(id, "t3", { completed: { t1: big(1) } }));
    const window = beforeCommit(a, async () => {
      // Replaces t1's item of the current generation and deletes the chunk set the save reuses.
      await b.saveTaskResult(id, "t1", big(5));
    });
    await a.saveSnapshot(atTask(id, "t3", { completed: { t1: big(1), t2: text("two") } }));
    expect(window.fired()).toBe(true);
    // The save is the last writer: its t1, whole.
    expect(bytesEqual(await outputOf(a, id, "t1"), big(1))).toBe(true);
  });

  it("a save committed by another client in between (a new generation): the save writes its outputs after all", async () => {
    const keyPrefix = uid("ddbr");
    const a = await freshBackend({ keyPrefix });
    const b = await freshBackend({ keyPrefix });
    const id = uid();
    await a.saveSnapshot(atTask(id, "t3", { completed: { t1: big(1) } }));
    const gen = (await rawHead(a, id)).gen?.S ?? "";
    const key = { PK: { S: a.layout.instancePk(id) }, SK: { S: a.layout.resultSk(gen, "t1") } };
    const { Item: oldItem } = await a.client.send(
      new GetItemCommand({ TableName: a.tableName, Key: key, ConsistentRead: true }),
    );
    const seen = record(a.client);
    const window = beforeCommit(a, async () => {
      // A new generation without t1: the one the reuse was decided on is dropped, its chunks too.
      await b.saveSnapshot(atTask(id, "t2", { completed: { t0: text("zero") } }));
      // ... but its t1 item is still there (a drop or cleanup() that deleted the chunks first):
      // only the condition on the generation tells the save its reuse no longer holds.
      await b.client.send(new PutItemCommand({ TableName: b.tableName, Item: oldItem }));
    });
    await a.saveSnapshot(atTask(id, "t3", { completed: { t1: big(1), t2: text("two") } }));
    expect(window.fired()).toBe(true);
    expect(chunkPuts(a, seen)).toBe(chunksOf(700_000));
    expect(bytesEqual(await outputOf(a, id, "t1"), big(1))).toBe(true);
  });
});
