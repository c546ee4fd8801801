import { GetItemCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { bytesEqual, ErrorCode, encodeSnapshotHeader } from "@sayiir/persistence-core";
import { atTask, expectCode, finished, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { CHUNK_BYTES } from "../src/index.js";
import { freshBackend, freshTable, isChunk, itemsOf } from "./helpers.js";
import { server } from "./subject.js";

const info = server();
const MiB = 1024 * 1024;

describe.skipIf(info === null)("storage layout: chunks, generations, garbage", () => {
  const ddb = info as NonNullable<typeof info>;

  it("large values become chunk items under 400 KB; replaced and deleted values leave nothing behind", async () => {
    const backend = await freshBackend({ tableName: await freshTable(ddb) });
    const id = uid();
    const big = patternBytes(5 * MiB, 3);
    await backend.saveSnapshot(
      atTask(id, "t2", { completed: { t1: big }, initialInput: patternBytes(MiB, 4) }),
    );
    const chunkCount = (await itemsOf(backend)).filter((i) => isChunk(backend, i)).length;
    expect(chunkCount).toBe(Math.ceil((5 * MiB) / CHUNK_BYTES) + Math.ceil(MiB / CHUNK_BYTES));
    const chunk = (await itemsOf(backend)).find((i) => isChunk(backend, i));
    const raw = await backend.client.send(
      new GetItemCommand({
        TableName: backend.tableName,
        Key: { PK: { S: chunk?.pk ?? "" }, SK: { S: "C" } },
      }),
    );
    expect(raw.Item?.d?.B?.byteLength).toBeLessThanOrEqual(CHUNK_BYTES);

    // Replacing the output of t1 (same generation) drops the old chunks after the commit.
    await backend.saveTaskResult(id, "t1", patternBytes(2 * MiB, 5));
    expect((await itemsOf(backend)).filter((i) => isChunk(backend, i)).length).toBe(
      Math.ceil((2 * MiB) / CHUNK_BYTES) + Math.ceil(MiB / CHUNK_BYTES),
    );
    // A new snapshot (new generation) drops the old generation's results and chunks.
    await backend.saveSnapshot(atTask(id, "t3", { completed: { t1: text("small") } }));
    const items = await itemsOf(backend);
    expect(items.filter((i) => isChunk(backend, i))).toEqual([]);
    expect(items.filter((i) => i.sk.startsWith("R#"))).toHaveLength(1);
    const loaded = await backend.loadSnapshot(id);
    expect(
      loaded.state.kind === "InProgress" &&
        bytesEqual(loaded.state.completedTasks.t1?.output ?? big, text("small")),
    ).toBe(true);
    // Finished: no results; deleted: only claim tombstones (kept for their tokens) remain.
    await backend.claimTask(id, "t3", "w", 60_000);
    await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: patternBytes(MiB, 6) }));
    await backend.deleteSnapshot(id);
    const left = await itemsOf(backend);
    expect(left.map((i) => i.sk)).toEqual(["L#" + left[0]?.sk.slice(2)]);
    expect(await backend.cleanup({ graceMs: 0 })).toEqual({ deletedItems: 0 });
  });

  it("the initial input is a value of its own beside the header; a head written before the split still loads", async () => {
    const backend = await freshBackend();
    const id = uid();
    const snapshot = atTask(id, "t1", { initialInput: text("the input") });
    await backend.saveSnapshot(snapshot);
    const key = { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } };
    const head = async () =>
      (
        await backend.client.send(
          new GetItemCommand({ TableName: backend.tableName, Key: key, ConsistentRead: true }),
        )
      ).Item;
    expect(Array.from((await head())?.id?.B ?? [])).toEqual(Array.from(text("the input")));
    // An older head: the initial input inside the header, no value of its own.
    await backend.client.send(
      new UpdateItemCommand({
        TableName: backend.tableName,
        Key: key,
        UpdateExpression: "SET hd = :h REMOVE id, ic, #n, il",
        ExpressionAttributeNames: { "#n": "in" },
        ExpressionAttributeValues: {
          ":h": { B: encodeSnapshotHeader(snapshot) },
        },
      }),
    );
    expect((await head())?.id).toBeUndefined();
    expect(Array.from((await backend.loadSnapshot(id)).initialInput ?? [])).toEqual(
      Array.from(text("the input")),
    );
    const [task] = await backend.findAvailableTasks("w", 10);
    expect(Array.from(task?.input ?? [])).toEqual(Array.from(text("the input")));
    // Saved again without one: none stored, and discovery hands out empty bytes.
    await backend.saveSnapshot(atTask(id, "t1"));
    expect((await backend.loadSnapshot(id)).initialInput).toBeUndefined();
    expect(Array.from((await backend.findAvailableTasks("w", 10))[0]?.input ?? [])).toEqual([]);
  });

  it("the ready index holds a task only while it is ready", async () => {
    const backend = await freshBackend();
    const id = uid();
    const readyAttr = async () =>
      (
        await backend.client.send(
          new GetItemCommand({
            TableName: backend.tableName,
            Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } },
            ConsistentRead: true,
          }),
        )
      ).Item?.GPK?.S;
    await backend.saveSnapshot(atTask(id, "t1"));
    expect(await readyAttr()).toMatch(/Q#\d+$/);
    await backend.saveTaskResult(id, "t1", text("one"));
    expect(await readyAttr()).toBeUndefined();
    await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("one") } }));
    expect(await readyAttr()).toBeDefined();
    await backend.saveSnapshot(finished(id, { kind: "Failed", error: "x" }));
    expect(await readyAttr()).toBeUndefined();
  });

  it("task results racing a delete either land before it or get NotFoundError; nothing survives the delete", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t0"));
    const writes = Array.from({ length: 20 }, (_, i) =>
      backend.saveTaskResult(id, `t${i}`, i % 4 === 0 ? patternBytes(400_000, i) : text(`out-${i}`)),
    );
    const deleted = backend.deleteSnapshot(id);
    const results = await Promise.allSettled([...writes, deleted]);
    for (const r of results) {
      if (r.status === "rejected") expect(r.reason).toMatchObject({ code: ErrorCode.NotFound });
    }
    expect(results.at(-1)?.status).toBe("fulfilled");
    await expectCode(backend.loadSnapshot(id), ErrorCode.NotFound);
    await backend.saveSnapshot(atTask(id, "t0"));
    const fresh = await backend.loadSnapshot(id);
    expect(fresh.state.kind === "InProgress" && Object.keys(fresh.state.completedTasks)).toEqual([]);
  });
});
