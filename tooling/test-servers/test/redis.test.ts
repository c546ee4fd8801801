import { Redis } from "ioredis";
import { describe, expect, inject, it } from "vitest";

const redis = inject("redis");

describe.skipIf(!redis)(
  `redis: ${redis ? `${redis.server} ${redis.version}` : inject("testServersUnavailable").redis}`,
  () => {
    it("answers with a real version through ioredis", async () => {
      const client = new Redis(redis!.url, { maxRetriesPerRequest: 1 });
      try {
        const info = await client.info("server");
        const version = /(?:redis|valkey)_version:(\S+)/.exec(info)?.[1];
        expect(version).toMatch(/^\d+\.\d+\.\d+/);
        expect(version).toBe(redis!.version);
        await client.set("smoke", "ok");
        expect(await client.get("smoke")).toBe("ok");
      } finally {
        client.disconnect();
      }
    });
  },
);
