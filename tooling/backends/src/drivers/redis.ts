// Redis: a storage is a key prefix (every key is `{<prefix>:<shard>}:...`).
import type { PersistentBackend } from "@sayiir/persistence-core";
import { CORRUPT_HEADER, type Driver } from "../driver.ts";
import { through } from "../urls.ts";

/** What the registry uses of RedisBackend beyond the contract. */
interface RedisLike extends PersistentBackend {
  layout: { instance(instanceId: string): { meta: string } };
}

async function admin(url: string) {
  const { Redis } = await import("ioredis");
  const client = new Redis(url, { maxRetriesPerRequest: 3 });
  client.on("error", () => {});
  return client;
}

export const redis: Driver = {
  name: "redis",
  server: "redis",
  specifier: "@sayiir/persistence-redis",
  className: "RedisBackend",
  async place({ url, storage, fresh }) {
    return { backend: "redis", url, storage: storage ?? fresh };
  },
  options(config, client) {
    return {
      url: through(config.url!, client.via),
      keyPrefix: config.storage,
      maxPayloadBytes: client.maxPayloadBytes,
      ...(client.timeoutMs ? { operationTimeoutMs: client.timeoutMs } : {}),
    };
  },
  async corrupt(config, id, backend) {
    const client = await admin(config.url!);
    try {
      // The header field of the instance hash (MetaField.header).
      await client.hset((backend as RedisLike).layout.instance(id).meta, "h", Buffer.from(CORRUPT_HEADER));
    } finally {
      client.disconnect();
    }
  },
  async drop(config, { throwAwayServer }) {
    const client = await admin(config.url!);
    try {
      // The run's own server: dropping everything is instant even with millions of keys.
      if (throwAwayServer) {
        await client.flushall();
        return;
      }
      let cursor = "0";
      do {
        const [next, keys] = await client.scan(cursor, "MATCH", `{${config.storage}:*`, "COUNT", 5000);
        cursor = next;
        if (keys.length > 0) await client.unlink(...keys);
      } while (cursor !== "0");
    } finally {
      client.disconnect();
    }
  },
};
