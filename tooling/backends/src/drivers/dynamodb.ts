// DynamoDB: a storage is a table of its own, or a key prefix in the profile's shared table
// (creating a table is slow; the reliability suite makes hundreds of storages).
import type { PersistentBackend } from "@sayiir/persistence-core";
import { CORRUPT_HEADER, type Driver } from "../driver.ts";
import type { StoreConfig } from "../types.ts";
import { through } from "../urls.ts";

/** What the registry uses of DynamoDBBackend beyond the contract. */
interface DynamoLike extends PersistentBackend {
  layout: { instancePk(instanceId: string): string };
}

/** The test tooling's fake credentials (DynamoDB Local and dynalite check none), unless AWS_* say otherwise. */
function clientConfig(endpoint: string) {
  const env = process.env;
  const given = env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY;
  return {
    endpoint: endpoint.replace(/\/$/, ""),
    region: env.SAYIIR_TEST_DYNAMODB_REGION || env.AWS_REGION || "us-east-1",
    credentials: given
      ? { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! }
      : { accessKeyId: "sayiirtest", secretAccessKey: "sayiir-test-secret" },
  };
}

const tableOf = (config: StoreConfig): string => config.sharedTable ?? config.storage;

async function withClient<T>(
  config: StoreConfig,
  fn: (client: import("@aws-sdk/client-dynamodb").DynamoDBClient) => Promise<T>,
): Promise<T> {
  const { DynamoDBClient } = await import("@aws-sdk/client-dynamodb");
  const client = new DynamoDBClient(clientConfig(config.url!));
  try {
    return await fn(client);
  } finally {
    client.destroy();
  }
}

export const dynamodb: Driver = {
  name: "dynamodb",
  server: "dynamodb",
  specifier: "@sayiir/persistence-dynamodb",
  className: "DynamoDBBackend",
  async place({ url, storage, fresh, profile }) {
    const endpoint = url!.replace(/\/$/, "");
    const { sharedTable } = profile;
    return {
      backend: "dynamodb",
      url: endpoint,
      storage: storage ?? fresh,
      ...(sharedTable ? { sharedTable } : {}),
    };
  },
  options(config, client) {
    const { timeoutMs } = client;
    return {
      tableName: tableOf(config),
      ...(config.sharedTable ? { keyPrefix: config.storage } : {}),
      clientConfig: clientConfig(through(config.url!, client.via)),
      maxPayloadBytes: client.maxPayloadBytes,
      ...(timeoutMs ? { requestTimeoutMs: timeoutMs, maxAttempts: 2 } : {}),
    };
  },
  migration(config) {
    // A shared table is created once per process, by a client without a key prefix.
    if (config.sharedTable === undefined) return undefined;
    return { key: `${config.url} ${config.sharedTable}`, config: { ...config, storage: "" } };
  },
  async corrupt(config, id, backend) {
    const { UpdateItemCommand } = await import("@aws-sdk/client-dynamodb");
    await withClient(config, (client) =>
      client.send(
        new UpdateItemCommand({
          TableName: tableOf(config),
          Key: { PK: { S: (backend as DynamoLike).layout.instancePk(id) }, SK: { S: "H" } },
          // The inline header (hd); hc/hn/hl would describe a chunked one.
          UpdateExpression: "SET hd = :bad REMOVE hc, hn, hl",
          ExpressionAttributeValues: { ":bad": { B: CORRUPT_HEADER } },
        }),
      ),
    );
  },
  async drop(config, { open }) {
    if (config.sharedTable === undefined) {
      const { DeleteTableCommand } = await import("@aws-sdk/client-dynamodb");
      await withClient(config, (client) =>
        client.send(new DeleteTableCommand({ TableName: config.storage })),
      );
      return;
    }
    // A key prefix in the shared table: delete what it holds, through the adapter.
    const sweeper = open();
    try {
      for (const id of await sweeper.listSnapshots()) await sweeper.deleteSnapshot(id).catch(() => {});
    } finally {
      await sweeper.close();
    }
  },
};
