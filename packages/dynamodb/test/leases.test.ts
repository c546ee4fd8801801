import { QueryCommand } from "@aws-sdk/client-dynamodb";
import { atTask, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { READY_INDEX } from "../src/index.js";
import { intercept } from "./faults.js";
import { freshBackend } from "./helpers.js";
import { server } from "./subject.js";

// Claim-next moves a claimed head from the ready partition of the `ready` index to a "leased"
// partition keyed by when the claim ends, so discovery does not read past claimed tasks.
const info = server();
const T0 = 1_800_000_000_000;

/** Instance ids in one partition of the ready index (both the ready and leased partitions). */
async function partition(backend: DynamoDBBackend, kind: "Q" | "K"): Promise<string[]> {
  const ids: string[] = [];
  for (let shard = 0; shard < backend.layout.shards; shard++) {
    const out = await backend.client.send(
      new QueryCommand({
        TableName: backend.tableName,
        IndexName: READY_INDEX,
        KeyConditionExpression: "GPK = :p",
        ExpressionAttributeValues: { ":p": { S: `${backend.layout.base}${kind}#${shard}` } },
      }),
    );
    for (const item of out.Items ?? []) ids.push(item.iid?.S ?? "");
  }
  return ids.sort();
}

/** Counts the keys read by BatchGetItem (discovery's verification reads). */
function countKeys(backend: DynamoDBBackend): { keys: number } {
  const state = { keys: 0 };
  intercept(backend.client, "initialize", async (call, send) => {
    if (call.command === "BatchGetItemCommand") {
      const input = call.input as { RequestItems?: Record<string, { Keys?: unknown[] }> };
      for (const entry of Object.values(input.RequestItems ?? {})) state.keys += entry.Keys?.length ?? 0;
    }
    return send();
  });
  return state;
}

describe.skipIf(info === null)("leased partition of the ready index", () => {
  it("claimed tasks leave the ready partition: discovery cost does not grow with claims in flight", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 2 });
    const base = uid("l");
    const ids = Array.from({ length: 30 }, (_, i) => `${base}-${String(i).padStart(2, "0")}`);
    for (const [i, id] of ids.entries())
      await backend.saveSnapshot(atTask(id, "t1", { updatedAt: T0 - 1000 + i }));
    const claimed = await backend.claimAvailableTasks("w", 25, 60_000);
    expect(claimed.map((t) => t.instanceId)).toEqual(ids.slice(0, 25));
    expect(await partition(backend, "K")).toEqual(ids.slice(0, 25));
    expect(await partition(backend, "Q")).toEqual(ids.slice(25));
    const reads = countKeys(backend);
    expect((await backend.findAvailableTasks("w", 5)).map((t) => t.instanceId)).toEqual(ids.slice(25));
    expect(reads.keys).toBe(10); // head + claim of the 5 unclaimed tasks only

    // Released: back in the ready partition at once.
    await backend.releaseTaskClaim(ids[3] as string, "t1", "w");
    expect(await partition(backend, "Q")).toContain(ids[3]);
    expect((await backend.findAvailableTasks("w", 1)).map((t) => t.instanceId)).toEqual([ids[3]]);

    // Ended leases (expiresAt + skew budget passed) are found again, in (updatedAt, id) order, and
    // moved back to the ready partition.
    now = T0 + 60_000 + 200;
    expect((await backend.findAvailableTasks("w", 100)).map((t) => t.instanceId)).toEqual(ids);
    expect(await partition(backend, "K")).toEqual([]);
    expect(await partition(backend, "Q")).toEqual(ids);
  });

  it("a renewed claim keeps its task hidden; its lease is re-keyed when the old end is reached", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 1 });
    const a = uid("a");
    const b = uid("b");
    await backend.saveSnapshot(atTask(a, "t1", { updatedAt: T0 - 2 }));
    await backend.saveSnapshot(atTask(b, "t1", { updatedAt: T0 - 1 }));
    const [task] = await backend.claimAvailableTasks("w", 1, 1_000);
    expect(task?.instanceId).toBe(a);
    now += 900;
    await backend.extendTaskClaim(a, "t1", "w", 10_000);
    now += 1_000; // past the first lease end, within the renewed claim
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([b]);
    expect(await partition(backend, "K")).toEqual([a]);
    const reads = countKeys(backend);
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([b]);
    expect(reads.keys).toBe(2); // re-keyed: no longer read as an ended lease
    now += 10_000;
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([a, b]);
  });

  it("a claim without ttl stays leased until released; claimTask takes over an ended lease", async () => {
    let now = T0;
    const backend = await freshBackend({ clock: () => now, readyShards: 1 });
    const a = uid("a");
    await backend.saveSnapshot(atTask(a, "t1"));
    expect(await backend.claimAvailableTasks("w", 1, null)).toHaveLength(1);
    now += 365 * 24 * 3_600_000;
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    await backend.releaseTaskClaim(a, "t1", "w");
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([a]);

    expect(await backend.claimAvailableTasks("w", 1, 1_000)).toHaveLength(1);
    now += 1_300;
    expect(await backend.claimTask(a, "t1", "other", 60_000)).not.toBeNull();
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
    await backend.releaseTaskClaim(a, "t1", "other");
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.instanceId)).toEqual([a]);
  });
});
