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
import { sleep } from "./dynamo.js";
import { ATTR, LIST_INDEX, READY_INDEX } from "./layout.js";

/** Attribute DynamoDB's TTL deletes released-claim tombstones by (epoch seconds). */
export const TTL_ATTRIBUTE = "ttl";

const INDEXES: GlobalSecondaryIndex[] = [
  {
    IndexName: READY_INDEX,
    KeySchema: [
      { AttributeName: ATTR.readyPk, KeyType: "HASH" },
      { AttributeName: ATTR.readySk, KeyType: "RANGE" },
    ],
    Projection: { ProjectionType: "INCLUDE", NonKeyAttributes: ["iid", "pos", "upd"] },
  },
  {
    IndexName: LIST_INDEX,
    KeySchema: [
      { AttributeName: ATTR.listPk, KeyType: "HASH" },
      { AttributeName: ATTR.listSk, KeyType: "RANGE" },
    ],
    Projection: { ProjectionType: "INCLUDE", NonKeyAttributes: ["iid"] },
  },
];

/** The table definition migrate() creates (also useful for infrastructure-as-code). */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: "PAY_PER_REQUEST",
    AttributeDefinitions: [ATTR.pk, ATTR.sk, ATTR.readyPk, ATTR.readySk, ATTR.listPk, ATTR.listSk].map(
      (name) => ({
        AttributeName: name,
        AttributeType: "S",
      }),
    ),
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
 * Creates the table and its indexes if missing (on-demand billing), adds a missing index, enables
 * TTL, and waits until everything is ACTIVE. Safe when many processes run it at once.
 */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  timeoutMs = 300_000,
): Promise<void> {
  try {
    await client.send(new CreateTableCommand(tableDefinition(tableName)));
  } catch (error) {
    if (errorName(error) !== "ResourceInUseException") throw error;
  }
  for (;;) {
    const present = await waitActive(client, tableName, timeoutMs);
    const missing = INDEXES.find((index) => !present.includes(index.IndexName ?? ""));
    if (missing === undefined) break;
    try {
      await client.send(
        new UpdateTableCommand({
          TableName: tableName,
          AttributeDefinitions: tableDefinition(tableName).AttributeDefinitions,
          GlobalSecondaryIndexUpdates: [{ Create: missing }],
        }),
      );
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
    }
  }
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
