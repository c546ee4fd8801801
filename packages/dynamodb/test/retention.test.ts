import { CreateTableCommand, DeleteTableCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  atTask,
  claimOrFail,
  eventually,
  expirySlackMs,
  finished,
  patternBytes,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { uniqueTestName } from "@sayiir/test-servers";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  DynamoDBBackend as Backend,
  type DynamoDBBackend,
  FINISHED_INDEX,
  tableDefinition,
} from "../src/index.js";
import { freshBackend, isChunk, itemsOf, rawHead } from "./helpers.js";
import { backendOptions, server } from "./subject.js";

const info = server();

/** Purges with `limit` until a call deletes nothing; the total this client deleted. */
async function drain(backend: DynamoDBBackend, finishedBefore: number, limit: number): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await backend.purgeFinished({ finishedBefore, limit });
    if (n === 0) return total;
    total += n;
  }
}

/** Finished workflows of every kind: saved, stepped by completeTasks, cancelled with claims and events. */
async function finishSome(backend: DynamoDBBackend, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${uid("done")}-${i}`;
    ids.push(id);
    if (i % 3 === 0) {
      await backend.saveSnapshot(finished(id, { kind: "Completed", finalOutput: text(String(i)) }));
    } else if (i % 3 === 1) {
      await backend.saveSnapshot(atTask(id, "t1"));
      const claim = await claimOrFail(backend, id, "t1", "w");
      const next = { kind: "Failed" as const, error: "boom" };
      expect(await backend.completeTasks([{ claim, output: text("one"), next }])).toEqual([null]);
    } else {
      // Cancelled keeps its results: one of them chunked.
      const output = i === 2 ? patternBytes(700_000, i) : text("one");
      await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: output } }));
      await claimOrFail(backend, id, "t2", "w");
      await backend.sendEvent(id, "late", text("payload"));
      await backend.cancelWorkflow(id);
    }
  }
  return ids;
}

describe.skipIf(info === null)("purgeFinished and the finished index", () => {
  it("two clients purging at once: each workflow counted by exactly one, nothing of them left", async () => {
    const keyPrefix = uniqueTestName("ddbp");
    const [a, b] = [await freshBackend({ keyPrefix }), await freshBackend({ keyPrefix })];
    const ids = await finishSome(a, 24);
    const running = uid("running");
    await a.saveSnapshot(atTask(running, "t2", { completed: { t1: text("kept") } }));
    const cut = Date.now() + expirySlackMs(a);

    // Both see the same oldest entries: every deletion is contended.
    const [byA, byB] = await Promise.all([drain(a, cut, 5), drain(b, cut, 5)]);
    expect(byA + byB).toBe(ids.length);
    expect(await a.listSnapshots()).toEqual([running]);
    const purged = new Set(ids.map((id) => a.layout.instancePk(id)));
    const left = (await itemsOf(a)).filter((item) => purged.has(item.pk) || isChunk(a, item));
    // Only claim tombstones (kept for their tokens) remain: no head, result, event, marker or chunk.
    expect(left.filter((item) => !item.sk.startsWith("L#"))).toEqual([]);
    expect(await a.loadTaskClaims(ids[2] as string)).toEqual([]);
    expect(await Promise.all([drain(a, cut, 5), drain(b, cut, 5)])).toEqual([0, 0]);
  });

  it("one call with a large limit against another: the counts still add up", async () => {
    const keyPrefix = uniqueTestName("ddbp");
    const [a, b] = [await freshBackend({ keyPrefix }), await freshBackend({ keyPrefix })];
    const ids = await finishSome(a, 12);
    const cut = Date.now() + expirySlackMs(a);
    const [byA, byB] = await Promise.all([
      a.purgeFinished({ finishedBefore: cut, limit: 100 }),
      drain(b, cut, 1),
    ]);
    expect(byA + byB).toBe(ids.length);
    expect(await a.listSnapshots()).toEqual([]);
  });

  it("the finish time is written with the finishing write, and a terminal re-save keeps it", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    expect((await rawHead(backend, id)).fin).toBeUndefined();
    expect((await rawHead(backend, id)).FPK).toBeUndefined();
    await backend.cancelWorkflow(id);
    const first = await rawHead(backend, id);
    expect(Number(first.fin?.N)).toBeGreaterThan(0);
    expect(first.FSK?.S?.startsWith(String(first.fin?.N).padStart(16, "0"))).toBe(true);
    const cancelled = await backend.loadSnapshot(id);
    await backend.saveSnapshot({ ...cancelled, updatedAt: cancelled.updatedAt + 1 });
    const again = await rawHead(backend, id);
    expect(again.gen?.S).not.toBe(first.gen?.S);
    expect([again.fin, again.FPK, again.FSK]).toEqual([first.fin, first.FPK, first.FSK]);
  });
});

describe.skipIf(info === null)("migrate() adds the finished index to an existing table", () => {
  const ddb = info as NonNullable<typeof info>;

  it("a version-2 table with finished instances: the index is added and their updatedAt becomes their finish time", async () => {
    const tableName = uniqueTestName("sayiir_v2");
    const backend = new Backend(backendOptions(ddb, { tableName }));
    const other = new Backend(backendOptions(ddb, { tableName }));
    onTestFinished(async () => {
      await backend.client.send(new DeleteTableCommand({ TableName: tableName }));
      await Promise.all([backend.close(), other.close()]);
    });
    const v3 = tableDefinition(tableName);
    await backend.client.send(
      new CreateTableCommand({
        ...v3,
        AttributeDefinitions: v3.AttributeDefinitions?.filter(
          (a) => !["FPK", "FSK"].includes(a.AttributeName ?? ""),
        ),
        GlobalSecondaryIndexes: v3.GlobalSecondaryIndexes?.filter((i) => i.IndexName !== FINISHED_INDEX),
      }),
    );
    const older = uid("older");
    const old = uid("old");
    const cancelled = uid("cancelled");
    const running = uid("running");
    await eventually("the v2 table to be usable", async () =>
      backend
        .saveSnapshot(finished(older, { kind: "Failed", error: "boom" }))
        .then(() => true)
        .catch(() => undefined),
    );
    await backend.saveSnapshot(finished(old, { kind: "Completed", finalOutput: text("done") }));
    await backend.saveSnapshot(atTask(cancelled, "t2", { completed: { t1: text("one") } }));
    await backend.cancelWorkflow(cancelled);
    await backend.saveSnapshot(atTask(running, "t1"));
    // Heads as a version-2 adapter wrote them: no finish time, no finished index keys.
    const updatedAt = new Map([
      [older, 1_000],
      [old, 2_000],
      [cancelled, 3_000],
    ]);
    for (const [id, upd] of updatedAt) {
      await backend.client.send(
        new UpdateItemCommand({
          TableName: tableName,
          Key: { PK: { S: backend.layout.instancePk(id) }, SK: { S: "H" } },
          UpdateExpression: "SET upd = :upd REMOVE fin, FPK, FSK",
          ExpressionAttributeValues: { ":upd": { N: String(upd) } },
        }),
      );
    }

    // Two processes migrate at once: one adds the index; both may run the idempotent pass.
    const reports = await Promise.all([backend.migrate(), other.migrate()]);
    expect(reports.map((r) => r.version)).toEqual([3, 3]);
    // (DynamoDB Local may accept both index creations of the race: each then reports [3].)
    expect(reports.map((r) => r.applied)).toContainEqual([3]);
    for (const r of reports) expect([[], [3]]).toContainEqual(r.applied);
    for (const [id, upd] of updatedAt) expect((await rawHead(backend, id)).fin?.N).toBe(String(upd));
    expect((await rawHead(backend, running)).fin).toBeUndefined();
    expect(await backend.migrate()).toEqual({ applied: [], version: 3 });

    expect(await backend.purgeFinished({ finishedBefore: 2_000, limit: 10 })).toBe(1);
    expect(await backend.purgeFinished({ finishedBefore: 3_001, limit: 1 })).toBe(1);
    expect((await backend.listSnapshots()).sort()).toEqual([cancelled, running].sort());
    expect(
      await backend.purgeFinished({ finishedBefore: Date.now() + expirySlackMs(backend), limit: 10 }),
    ).toBe(1);
    expect(await backend.listSnapshots()).toEqual([running]);
  });
});
