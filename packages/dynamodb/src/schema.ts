import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type GlobalSecondaryIndex,
  UpdateTableCommand,
  UpdateTimeToLiveCommand,
} from "@aws-sdk/client-dynamodb";
import { type MigrationReport, sleep } from "@sayiir/persistence-core/adapter";
import { ATTR, FINISHED_INDEX, LIST_INDEX, READY_INDEX, TIMER_INDEX, TTL_ATTRIBUTE } from "./layout.js";

/*
 * The schema: one table with global secondary indexes and TTL on ATTR.ttl. Version 1 is the table
 * with the ready and list indexes; version 2 adds the timer index (waits for an event with a
 * timeout); version 3 the finished index (purgeFinished; its data pass is retention.ts
 * backfillFinishTimes). DynamoDB stores no schema version: the table and its indexes are the version.
 */

/** The schema version migrate() brings a table to. */
export const SCHEMA_VERSION = 3;

/** The version that brought each index. */
const INDEX_VERSION: Record<string, number> = {
  [READY_INDEX]: 1,
  [LIST_INDEX]: 1,
  [TIMER_INDEX]: 2,
  [FINISHED_INDEX]: 3,
};

const INDEXES: GlobalSecondaryIndex[] = [
  {
    IndexName: READY_INDEX,
    KeySchema: [
      { AttributeName: ATTR.readyPk, KeyType: "HASH" },
      { AttributeName: ATTR.readySk, KeyType: "RANGE" },
    ],
    Projection: {
      ProjectionType: "INCLUDE",
      NonKeyAttributes: [ATTR.instanceId, ATTR.position, ATTR.updatedAt],
    },
  },
  {
    IndexName: LIST_INDEX,
    KeySchema: [
      { AttributeName: ATTR.listPk, KeyType: "HASH" },
      { AttributeName: ATTR.listSk, KeyType: "RANGE" },
    ],
    Projection: { ProjectionType: "INCLUDE", NonKeyAttributes: [ATTR.instanceId] },
  },
  {
    IndexName: TIMER_INDEX,
    KeySchema: [
      { AttributeName: ATTR.timerPk, KeyType: "HASH" },
      { AttributeName: ATTR.timerSk, KeyType: "RANGE" },
    ],
    Projection: {
      ProjectionType: "INCLUDE",
      NonKeyAttributes: [ATTR.instanceId, ATTR.position, ATTR.timeoutAt],
    },
  },
  {
    // Sparse: only finished heads carry FPK/FSK (see layout.ts).
    IndexName: FINISHED_INDEX,
    KeySchema: [
      { AttributeName: ATTR.finishedPk, KeyType: "HASH" },
      { AttributeName: ATTR.finishedSk, KeyType: "RANGE" },
    ],
    Projection: { ProjectionType: "INCLUDE", NonKeyAttributes: [ATTR.instanceId] },
  },
];

/** The table definition migrate() creates (also useful for infrastructure-as-code). */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [
      ATTR.pk,
      ATTR.sk,
      ATTR.readyPk,
      ATTR.readySk,
      ATTR.listPk,
      ATTR.listSk,
      ATTR.timerPk,
      ATTR.timerSk,
      ATTR.finishedPk,
      ATTR.finishedSk,
    ].map((name) => ({ AttributeName: name, AttributeType: "S" })),
    KeySchema: [
      { AttributeName: ATTR.pk, KeyType: "HASH" },
      { AttributeName: ATTR.sk, KeyType: "RANGE" },
    ],
    GlobalSecondaryIndexes: INDEXES,
  };
}

const errorName = (error: unknown): string =>
  error !== null && typeof error === "object" ? String((error as { name?: unknown }).name) : "";

async function waitActive(client: DynamoDBClient, tableName: string, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 2000)) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexes = Table?.GlobalSecondaryIndexes ?? [];
    if (
      Table?.TableStatus === "ACTIVE" &&
      indexes.every((i) => i.IndexStatus === undefined || i.IndexStatus === "ACTIVE")
    ) {
      return indexes.map((i) => i.IndexName ?? "");
    }
    if (Date.now() > deadline)
      throw new Error(`table ${tableName} did not become ACTIVE within ${timeoutMs} ms`);
    await sleep(delay);
  }
}

/**
 * Creates the table and its indexes if missing (on-demand billing), adds a missing index (one at
 * a time: DynamoDB allows one index creation per update), enables TTL, and waits until everything
 * is ACTIVE. Safe when many processes run it at once. Reports the versions this call brought:
 * creating the table, all of them ([1, 2, 3]); adding the timer and finished indexes to a
 * version-1 table, [2, 3].
 */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  timeoutMs = 300_000,
): Promise<MigrationReport> {
  const applied = new Set<number>();
  if (await createTable(client, tableName)) for (const v of Object.values(INDEX_VERSION)) applied.add(v);
  for (;;) {
    const present = await waitActive(client, tableName, timeoutMs);
    const missing = INDEXES.find((index) => !present.includes(index.IndexName ?? ""));
    if (missing === undefined) break;
    if (await createIndex(client, tableName, missing))
      applied.add(INDEX_VERSION[missing.IndexName ?? ""] ?? 1);
  }
  await enableTtl(client, tableName);
  return { applied: [...applied].sort((a, b) => a - b), version: SCHEMA_VERSION };
}

/** True when this call created the table; false when it exists (or another process creates it). */
async function createTable(client: DynamoDBClient, tableName: string): Promise<boolean> {
  try {
    await client.send(new CreateTableCommand(tableDefinition(tableName)));
    return true;
  } catch (error) {
    if (errorName(error) !== "ResourceInUseException") throw error;
    return false;
  }
}

/** True when this call added the index; false when another process is changing the table. */
async function createIndex(
  client: DynamoDBClient,
  tableName: string,
  index: GlobalSecondaryIndex,
): Promise<boolean> {
  try {
    await client.send(
      new UpdateTableCommand({
        TableName: tableName,
        AttributeDefinitions: tableDefinition(tableName).AttributeDefinitions,
        GlobalSecondaryIndexUpdates: [{ Create: index }],
      }),
    );
    return true;
  } catch (error) {
    // Another process is creating it (or another index) right now: wait and look again.
    const name = errorName(error);
    if (
      name !== "ResourceInUseException" &&
      name !== "ValidationException" &&
      name !== "LimitExceededException"
    )
      throw error;
    await sleep(500);
    return false;
  }
}

async function enableTtl(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    const ttl = await client.send(new DescribeTimeToLiveCommand({ TableName: tableName }));
    const status = ttl.TimeToLiveDescription?.TimeToLiveStatus;
    if (status !== "ENABLED" && status !== "ENABLING") {
      await client.send(
        new UpdateTimeToLiveCommand({
          TableName: tableName,
          TimeToLiveSpecification: { Enabled: true, AttributeName: TTL_ATTRIBUTE },
        }),
      );
    }
  } catch (error) {
    // A concurrent migrate enabled it first, or the server has no TTL: tombstones then stay.
    const name = errorName(error);
    if (name !== "ValidationException" && name !== "UnknownOperationException") throw error;
  }
}
