import { DeleteTableCommand, DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb";
import type { DynamoDbInfo } from "@sayiir/test-servers";
import { uniqueTestName } from "@sayiir/test-servers";
import { onTestFinished } from "vitest";
import { DynamoDBBackend, type DynamoDBBackendOptions } from "../src/index.js";
import { backendOptions, clientConfig, ensureTable } from "./subject.js";

/** A table of its own (migrated), dropped when the test ends: for tests that scan the table. */
export async function freshTable(info: DynamoDbInfo): Promise<string> {
  const tableName = uniqueTestName("sayiir_own");
  await ensureTable(info, tableName);
  onTestFinished(async () => {
    const client = new DynamoDBClient(clientConfig(info));
    try {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    } finally {
      client.destroy();
    }
  });
  return tableName;
}

/** A backend on its own key prefix of the shared test table, closed when the test ends. */
export async function freshBackend(
  info: DynamoDbInfo,
  extra: Partial<DynamoDBBackendOptions> = {},
): Promise<DynamoDBBackend> {
  await ensureTable(info);
  const backend = new DynamoDBBackend(backendOptions(info, { keyPrefix: uniqueTestName("ddbx"), ...extra }));
  onTestFinished(() => backend.close());
  return backend;
}

export interface Injection {
  /** Calls that failed on purpose so far. */
  count: number;
  /** How many more calls will fail. */
  remaining: number;
}

/**
 * An SDK middleware that throws `makeError()` instead of sending the request, for the next `times`
 * calls of the given commands. It sits in the deserialize step, inside the SDK's retry middleware,
 * so the SDK's retry strategy sees these errors exactly as it would see the server's.
 */
export function injectErrors(
  client: DynamoDBClient,
  commands: string[],
  times: number,
  makeError: () => Error,
): Injection {
  const state: Injection = { count: 0, remaining: times };
  const name = `inject-${Math.random().toString(36).slice(2)}`;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (state.remaining > 0 && commands.includes(String(context.commandName))) {
        state.remaining--;
        state.count++;
        throw makeError();
      }
      return next(args);
    },
    { step: "deserialize", name },
  );
  onTestFinished(() => {
    client.middlewareStack.remove(name);
  });
  return state;
}

/** Every item stored under a backend's key prefix (a scan: tests only). */
export async function itemsOf(backend: DynamoDBBackend): Promise<Array<{ pk: string; sk: string }>> {
  const items: Array<{ pk: string; sk: string }> = [];
  let startKey: Record<string, import("@aws-sdk/client-dynamodb").AttributeValue> | undefined;
  do {
    const out = await backend.client.send(
      new ScanCommand({
        TableName: backend.tableName,
        ConsistentRead: true,
        ExclusiveStartKey: startKey,
        FilterExpression: "begins_with(PK, :base)",
        ProjectionExpression: "PK, SK",
        ExpressionAttributeValues: { ":base": { S: backend.layout.base } },
      }),
    );
    for (const item of out.Items ?? []) items.push({ pk: item.PK?.S ?? "", sk: item.SK?.S ?? "" });
    startKey = out.LastEvaluatedKey;
  } while (startKey !== undefined);
  return items;
}

export const isChunk = (backend: DynamoDBBackend, item: { pk: string }): boolean =>
  item.pk.startsWith(`${backend.layout.base}C#`);
