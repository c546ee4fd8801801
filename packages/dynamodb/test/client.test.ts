import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ListTablesCommand,
} from "@aws-sdk/client-dynamodb";
import { BackendError, ErrorCode } from "@sayiir/persistence-core";
import { atTask, awaiting, eventually, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { uniqueTestName } from "@sayiir/test-servers";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  DynamoDBBackend,
  FINISHED_INDEX,
  LIST_INDEX,
  READY_INDEX,
  TIMER_INDEX,
  tableDefinition,
} from "../src/index.js";
import { freshBackend } from "./helpers.js";
import { backendOptions, clientConfig, ensureTable, server, TABLE } from "./subject.js";

const info = server();

describe.skipIf(info === null)("client ownership, migrate, key prefixes, failures", () => {
  const ddb = info as NonNullable<typeof info>;

  it("close() leaves a user-supplied client open, and destroys a client the backend created", async () => {
    await ensureTable(ddb);
    const client = new DynamoDBClient(clientConfig(ddb));
    onTestFinished(() => client.destroy());
    const backend = new DynamoDBBackend({ tableName: TABLE, client, keyPrefix: uniqueTestName("own") });
    expect(backend.client).toBe(client);
    await backend.saveSnapshot(atTask(uid(), "t1"));
    await backend.close();
    expect(await rejection(backend.listSnapshots())).toBeInstanceOf(BackendError);
    expect((await client.send(new ListTablesCommand({}))).TableNames).toContain(TABLE);

    const owned = new DynamoDBBackend(backendOptions(ddb, { keyPrefix: uniqueTestName("owned") }));
    expect(await owned.listSnapshots()).toEqual([]);
    let destroyed = false;
    const destroy = owned.client.destroy.bind(owned.client);
    owned.client.destroy = () => {
      destroyed = true;
      destroy();
    };
    await owned.close();
    expect(destroyed).toBe(true);
  });

  it("migrate() creates the table with its four indexes (on-demand), is idempotent and safe to race", async () => {
    const tableName = uniqueTestName("sayiir_migrate");
    const backends = Array.from({ length: 3 }, () => new DynamoDBBackend(backendOptions(ddb, { tableName })));
    onTestFinished(async () => {
      await backends[0]?.client.send(new DeleteTableCommand({ TableName: tableName }));
      await Promise.all(backends.map((b) => b.close()));
    });
    const reports = await Promise.all(backends.map((b) => b.migrate()));
    // Exactly one of the racing calls created the table (schema versions 1 to 3); a later call applies nothing.
    expect(reports.map((r) => r.version)).toEqual([3, 3, 3]);
    expect(reports.filter((r) => r.applied.length > 0).map((r) => r.applied)).toEqual([[1, 2, 3]]);
    expect(await backends[0]?.migrate()).toEqual({ applied: [], version: 3 });
    const { Table } = await (backends[0] as DynamoDBBackend).client.send(
      new DescribeTableCommand({ TableName: tableName }),
    );
    expect(Table?.TableStatus).toBe("ACTIVE");
    expect(Table?.BillingModeSummary?.BillingMode ?? "PAY_PER_REQUEST").toBe("PAY_PER_REQUEST");
    expect((Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName).sort()).toEqual(
      [FINISHED_INDEX, LIST_INDEX, READY_INDEX, TIMER_INDEX].sort(),
    );
    const id = uid();
    await backends[1]?.saveSnapshot(atTask(id, "t1"));
    expect(await backends[2]?.listSnapshots()).toEqual([id]);
  });

  it("migrate() brings a version-1 table (no timer or finished index) to version 3, keeping its data", async () => {
    const tableName = uniqueTestName("sayiir_v1");
    const backend = new DynamoDBBackend(backendOptions(ddb, { tableName }));
    onTestFinished(async () => {
      await backend.client.send(new DeleteTableCommand({ TableName: tableName }));
      await backend.close();
    });
    // The version-1 table: the definition without the timer and finished indexes and their keys.
    const v3 = tableDefinition(tableName);
    await backend.client.send(
      new CreateTableCommand({
        ...v3,
        AttributeDefinitions: v3.AttributeDefinitions?.filter(
          (a) => !["TPK", "TSK", "FPK", "FSK"].includes(a.AttributeName ?? ""),
        ),
        GlobalSecondaryIndexes: v3.GlobalSecondaryIndexes?.filter(
          (i) => i.IndexName !== TIMER_INDEX && i.IndexName !== FINISHED_INDEX,
        ),
      }),
    );
    const id = uid();
    await eventually("the v1 table to be usable", async () =>
      backend
        .saveSnapshot(atTask(id, "t1", { initialInput: text("kept") }))
        .then(() => true)
        .catch(() => undefined),
    );
    expect(await backend.migrate()).toEqual({ applied: [2, 3], version: 3 });
    expect(await backend.migrate()).toEqual({ applied: [], version: 3 });
    expect(Array.from((await backend.loadSnapshot(id)).initialInput ?? [])).toEqual(Array.from(text("kept")));
    const waiting = uid();
    await backend.saveSnapshot(awaiting(waiting, "e", "t2", { timeoutAt: 1_000 }));
    expect(
      (await backend.findAvailableTasks("w", 10)).map((t) => [t.instanceId, t.timedOut ?? false]),
    ).toEqual(
      expect.arrayContaining([
        [id, false],
        [waiting, true],
      ]),
    );
  });

  it("a missing table gives BackendError (not a hang)", async () => {
    const backend = new DynamoDBBackend(backendOptions(ddb, { tableName: uniqueTestName("sayiir_missing") }));
    onTestFinished(() => backend.close());
    const error = await rejection(backend.loadSnapshot("x"));
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect(((error as BackendError).cause as Error).name).toBe("ResourceNotFoundException");
  });

  it("key prefixes isolate applications sharing one table, discovery included", async () => {
    const one = await freshBackend();
    const two = await freshBackend();
    const id = uid();
    await one.saveSnapshot(atTask(id, "t1", { initialInput: text("one") }));
    await two.saveSnapshot(atTask(id, "t2", { initialInput: text("two") }));
    expect((await one.findAvailableTasks("w", 10)).map((t) => t.taskId)).toEqual(["t1"]);
    expect((await two.findAvailableTasks("w", 10)).map((t) => t.taskId)).toEqual(["t2"]);
    expect(await one.claimTask(id, "t1", "w", 1000)).not.toBeNull();
    expect(await two.claimTask(id, "t1", "w", 1000)).not.toBeNull();
    await one.deleteSnapshot(id);
    expect(await one.listSnapshots()).toEqual([]);
    expect(await two.listSnapshots()).toEqual([id]);
    // A prefix that is another's prefix plus more characters still never shares keys.
    expect(
      new DynamoDBBackend({ tableName: TABLE, keyPrefix: "a#", client: one.client }).layout.base,
    ).not.toBe(new DynamoDBBackend({ tableName: TABLE, keyPrefix: "a", client: one.client }).layout.base);
  });

  it("an unreachable endpoint gives BackendError within a bounded time, with the cause", async () => {
    const backend = new DynamoDBBackend({
      tableName: TABLE,
      clientConfig: { ...clientConfig(ddb), endpoint: "http://127.0.0.1:9", maxAttempts: 2 },
      requestTimeoutMs: 2000,
    });
    onTestFinished(() => backend.close());
    const started = Date.now();
    const error = await rejection(backend.loadSnapshot("x"));
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).cause).toBeDefined();
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it("capabilities: durable, judged on the client clock with the skew budget, the ready index's shards", () => {
    const backend = new DynamoDBBackend({ tableName: TABLE, clientConfig: clientConfig(ddb) });
    expect(backend.capabilities).toEqual({
      durable: true,
      clock: "client",
      clockSkewMs: 200,
      shards: 8,
      wakeUps: "poll",
      wakeBoundMs: 200,
      dbSystem: "aws.dynamodb",
    });
    const tuned = new DynamoDBBackend({
      tableName: TABLE,
      client: backend.client,
      clockSkewBudgetMs: 50,
      readyShards: 3,
    });
    expect(tuned.capabilities).toMatchObject({ clockSkewMs: 50, shards: 3 });
    onTestFinished(() => backend.close());
  });

  it("options are validated", () => {
    expect(() => new DynamoDBBackend({ tableName: "x" })).toThrow(/tableName/);
    expect(() => new DynamoDBBackend({ tableName: TABLE, keyPrefix: "a\u0000b" })).toThrow(/keyPrefix/);
    expect(() => new DynamoDBBackend({ tableName: TABLE, clockSkewBudgetMs: -1 })).toThrow(
      /clockSkewBudgetMs/,
    );
  });
});
