// completeTasks on DynamoDB: one BatchGetItem for the batch, one TransactWriteItems per instance
// (cut under the 100-item / 4 MB limits), lost races judged again on a fresh read, commits whose
// response was lost recognised by the nonce left on the claim's tombstone.
import {
  type DynamoDBClient,
  TransactionCanceledException,
  type TransactWriteItem,
} from "@aws-sdk/client-dynamodb";
import { bytesEqual, ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, claimOrFail, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { uniqueTestName } from "@sayiir/test-servers";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { beforeNext, injectErrors, loseResponses, record } from "./faults.js";
import { freshBackend, isChunk, itemsOf } from "./helpers.js";
import { server } from "./subject.js";

const info = server();
const $metadata = { httpStatusCode: 400 };

/** Lets the next TransactWriteItems reach the server, then shows the client a conflict instead. */
const loseNextCommit = (client: DynamoDBClient) =>
  loseResponses(
    client,
    ["TransactWriteItemsCommand"],
    1,
    () =>
      new TransactionCanceledException({
        message: "injected: Transaction cancelled [TransactionConflict]",
        $metadata,
        CancellationReasons: [{ Code: "TransactionConflict" }],
      }),
  );

/** Runs `hook` once, before the next TransactWriteItems of `client` reaches the server. */
const beforeNextTransaction = (client: DynamoDBClient, hook: () => Promise<void>) =>
  beforeNext(client, "TransactWriteItemsCommand", hook);

/** The kit's claimOrFail with this file's worker names and ttl. */
const claimTaskOrFail = (backend: DynamoDBBackend, instanceId: string, taskId: string): Promise<TaskClaim> =>
  claimOrFail(backend, instanceId, taskId, `worker-${taskId}`, 60_000);

async function results(backend: DynamoDBBackend, instanceId: string): Promise<Record<string, Uint8Array>> {
  const loaded = await backend.loadSnapshot(instanceId);
  if (loaded.state.kind !== "InProgress") throw new Error("not InProgress");
  return Object.fromEntries(Object.entries(loaded.state.completedTasks).map(([t, r]) => [t, r.output]));
}

const transactions = (seen: ReturnType<typeof record>) =>
  seen
    .filter((c) => c.command === "TransactWriteItemsCommand")
    .map((c) => c.input.TransactItems as TransactWriteItem[]);

describe.skipIf(info === null)("completeTasks", () => {
  async function twoClients(): Promise<[DynamoDBBackend, DynamoDBBackend]> {
    const keyPrefix = uniqueTestName("ddbc");
    return [await freshBackend({ keyPrefix }), await freshBackend({ keyPrefix })];
  }

  it("one BatchGetItem for the batch, then one transaction per instance holding all its completions", async () => {
    const backend = await freshBackend();
    const busy = uid();
    const others = [uid(), uid()];
    await backend.saveSnapshot(atTask(busy, "a"));
    for (const id of others) await backend.saveSnapshot(atTask(id, "t1"));
    const tasks = ["a", "b", "c", "d", "e", "f"];
    const claims = [
      ...(await Promise.all(tasks.map((t) => claimTaskOrFail(backend, busy, t)))),
      ...(await Promise.all(others.map((id) => claimTaskOrFail(backend, id, "t1")))),
    ];
    const seen = record(backend.client);
    const outcomes = await backend.completeTasks(
      claims.map((claim) => ({ claim, output: text(`${claim.instanceId}/${claim.taskId}`) })),
    );
    expect(outcomes).toEqual(claims.map(() => null));
    expect(seen.map((c) => c.command).sort()).toEqual([
      "BatchGetItemCommand",
      "TransactWriteItemsCommand",
      "TransactWriteItemsCommand",
      "TransactWriteItemsCommand",
    ]);
    // The busy instance: its head once, a result put and a claim update per task.
    expect(
      transactions(seen)
        .map((items) => items.length)
        .sort((x, y) => x - y),
    ).toEqual([3, 3, 13]);
    expect(Object.keys(await results(backend, busy)).sort()).toEqual(tasks);
    for (const t of tasks) expect(await backend.claimTask(busy, t, "next", 60_000)).not.toBeNull();
  });

  it("completions of one instance that lose a race to a concurrent write are judged again and all land", async () => {
    const [backend, other] = await twoClients();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "a"));
    const position = await claimTaskOrFail(other, id, "a");
    const claims = await Promise.all(["b", "c", "d"].map((t) => claimTaskOrFail(backend, id, t)));
    const seen = record(backend.client);
    // Between our read and our commit, another client completes the position's task: the head
    // leaves the ready index and its updatedAt moves, so our transaction's head condition fails.
    const window = beforeNextTransaction(backend.client, async () => {
      expect(await other.completeTasks([{ claim: position, output: text("a") }])).toEqual([null]);
    });
    const outcomes = await backend.completeTasks(
      claims.map((claim) => ({ claim, output: text(claim.taskId) })),
    );
    expect(window.fired()).toBe(true);
    expect(outcomes).toEqual([null, null, null]);
    expect(transactions(seen)).toHaveLength(2);
    const stored = await results(backend, id);
    expect(Object.keys(stored).sort()).toEqual(["a", "b", "c", "d"]);
    expect(Array.from(stored.d ?? [])).toEqual(Array.from(text("d")));
    expect(await backend.findAvailableTasks("w", 10)).toEqual([]);
  });

  it("transactions cancelled by conflicts are sent again; every completion lands once", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "a"));
    const claims = await Promise.all(["a", "b"].map((t) => claimTaskOrFail(backend, id, t)));
    const conflicts = injectErrors(
      backend.client,
      ["TransactWriteItemsCommand"],
      3,
      () =>
        new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict, None, None, None, None]",
          $metadata,
          CancellationReasons: [
            { Code: "TransactionConflict" },
            { Code: "None" },
            { Code: "None" },
            { Code: "None" },
            { Code: "None" },
          ],
        }),
    );
    expect(
      await backend.completeTasks(claims.map((claim) => ({ claim, output: text(claim.taskId) }))),
    ).toEqual([null, null]);
    expect(conflicts.count).toBe(3);
    expect(Object.keys(await results(backend, id)).sort()).toEqual(["a", "b"]);
  });

  it("a commit whose response was lost is recognised by its nonce: success, and its chunks are kept", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "a"));
    const claims = await Promise.all(["a", "b"].map((t) => claimTaskOrFail(backend, id, t)));
    const big = patternBytes(900_000, 4); // chunked
    const lost = loseNextCommit(backend.client);
    // The commit lands, the client sees a conflict and sends it again: refused now (the claims are
    // tombstones, the head left the ready index), which must not be reported as a lost claim.
    const outcomes = await backend.completeTasks([
      { claim: claims[0] as TaskClaim, output: big },
      { claim: claims[1] as TaskClaim, output: text("b") },
    ]);
    expect(lost.count).toBe(1);
    expect(outcomes).toEqual([null, null]);
    const stored = await results(backend, id);
    expect(bytesEqual(stored.a ?? new Uint8Array(), big)).toBe(true);
    expect(Array.from(stored.b ?? [])).toEqual(Array.from(text("b")));
  });

  it("more completions than a transaction holds (100 items, 4 MB) are cut into several; all land", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t00"));
    const many = Array.from({ length: 60 }, (_, i) => `t${String(i).padStart(2, "0")}`);
    const claims = await Promise.all(many.map((t) => claimTaskOrFail(backend, id, t)));
    let seen = record(backend.client);
    const outcomes = await backend.completeTasks(
      claims.map((claim) => ({ claim, output: text(claim.taskId) })),
    );
    expect(outcomes).toEqual(many.map(() => null));
    expect(transactions(seen).map((items) => items.length)).toEqual([99, 23]);
    expect(Object.keys(await results(backend, id)).sort()).toEqual(many);

    // Inline values (up to 300,000 bytes) travel in the transaction: 12 of them exceed 4 MB.
    const wide = uid();
    await backend.saveSnapshot(atTask(wide, "w00"));
    const tasks = Array.from({ length: 12 }, (_, i) => `w${String(i).padStart(2, "0")}`);
    const wideClaims = await Promise.all(tasks.map((t) => claimTaskOrFail(backend, wide, t)));
    seen = record(backend.client);
    const outputs = tasks.map((_, i) => patternBytes(300_000, i + 1));
    expect(
      await backend.completeTasks(
        wideClaims.map((claim, i) => ({ claim, output: outputs[i] as Uint8Array })),
      ),
    ).toEqual(tasks.map(() => null));
    const sizes = transactions(seen).map((items) =>
      items.reduce((sum, item) => sum + (item.Put?.Item?.d?.B?.byteLength ?? 0), 0),
    );
    expect(sizes.length).toBeGreaterThan(1);
    for (const size of sizes) expect(size).toBeLessThan(4_000_000);
    const stored = await results(backend, wide);
    for (const [i, t] of tasks.entries())
      expect(bytesEqual(stored[t] ?? new Uint8Array(), outputs[i] as Uint8Array)).toBe(true);
  });

  it("refused completions keep their claims and leave no chunks behind", async () => {
    const backend = await freshBackend();
    const live = uid();
    const missing = uid();
    await backend.saveSnapshot(atTask(live, "t1"));
    const claim = await claimTaskOrFail(backend, live, "t1");
    const onMissing = await claimTaskOrFail(backend, missing, "t1");
    const before = await itemsOf(backend);
    const outcomes = await backend.completeTasks([
      { claim: { ...claim, token: claim.token + 1 }, output: patternBytes(800_000, 1) },
      { claim: onMissing, output: patternBytes(800_000, 2) },
    ]);
    expect(outcomes.map((o) => o?.code)).toEqual([ErrorCode.ClaimLost, ErrorCode.NotFound]);
    const after = await itemsOf(backend);
    expect(after.filter((item) => isChunk(backend, item))).toEqual([]);
    expect(after.map((i) => `${i.pk}|${i.sk}`).sort()).toEqual(before.map((i) => `${i.pk}|${i.sk}`).sort());
    expect(await backend.claimTask(live, "t1", "probe", 60_000)).toBeNull();
    expect(await backend.completeTasks([{ claim, output: text("ok") }])).toEqual([null]);
  });
});
