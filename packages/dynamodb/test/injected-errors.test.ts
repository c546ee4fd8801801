import {
  DynamoDBClient,
  ProvisionedThroughputExceededException,
  ThrottlingException,
  TransactionCanceledException,
  TransactionConflictException,
} from "@aws-sdk/client-dynamodb";
import { BackendError, bytesEqual, ErrorCode } from "@sayiir/persistence-core";
import { atTask, comparable, patternBytes, rejection, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it, onTestFinished } from "vitest";
import { DynamoDBBackend } from "../src/index.js";
import { injectErrors } from "./faults.js";
import { freshBackend, freshTable, isChunk, itemsOf } from "./helpers.js";
import { backendOptions, clientConfig, ensureTable, server } from "./subject.js";

// DynamoDB Local never throttles and never reports transaction conflicts: these tests make the
// client see those errors (an SDK middleware: the fault-injection seam of test/faults.ts) and
// check what the adapter does with them.
const info = server();
const $metadata = { httpStatusCode: 400 };

describe.skipIf(info === null)("injected DynamoDB errors (SDK middleware)", () => {
  const ddb = info as NonNullable<typeof info>;

  it("throttling (ProvisionedThroughputExceeded, Throttling) is retried by the SDK's retry strategy", async () => {
    const backend = await freshBackend();
    const id = uid();
    const puts = injectErrors(
      backend.client,
      ["PutItemCommand"],
      2,
      () =>
        new ProvisionedThroughputExceededException({ message: "injected: throughput exceeded", $metadata }),
    );
    await backend.saveSnapshot(atTask(id, "t1", { initialInput: text("in") }));
    expect(puts.count).toBe(2);
    const gets = injectErrors(
      backend.client,
      ["GetItemCommand"],
      2,
      () => new ThrottlingException({ message: "injected: rate exceeded", $metadata }),
    );
    expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
    expect(gets.count).toBe(2);
  });

  it("throttling that survives the retries becomes a BackendError with the SDK's error as cause; the backend recovers", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const gets = injectErrors(
      backend.client,
      ["GetItemCommand"],
      1000,
      () => new ThrottlingException({ message: "injected: rate exceeded", $metadata }),
    );
    const error = await rejection(backend.loadSnapshot(id));
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).cause).toBeInstanceOf(ThrottlingException);
    expect(gets.count).toBe(3); // clientConfig's maxAttempts
    gets.remaining = 0;
    expect((await backend.loadSnapshot(id)).instanceId).toBe(id);
  });

  it("TransactionConflictException (not retried by the SDK) is retried by the adapter", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const claim = await backend.claimTask(id, "t1", "w", 60_000);
    if (claim === null) throw new Error("claim failed");
    const conflicts = injectErrors(
      backend.client,
      ["TransactWriteItemsCommand"],
      3,
      () => new TransactionConflictException({ message: "injected: transaction conflict", $metadata }),
    );
    await backend.saveTaskResult(id, "t1", text("done"), { claim });
    expect(conflicts.count).toBe(3);
    const loaded = await backend.loadSnapshot(id);
    expect(
      loaded.state.kind === "InProgress" && Array.from(loaded.state.completedTasks.t1?.output ?? []),
    ).toEqual(Array.from(text("done")));
  });

  it("a transaction cancelled by conflicts is retried; if conflicts outlast the retries: BackendError, nothing written", async () => {
    const backend = await freshBackend({ conflictRetries: 4, tableName: await freshTable(ddb) });
    const id = uid();
    const original = atTask(id, "t1", { completed: { t0: text("zero") } });
    await backend.saveSnapshot(original);
    const cancelled = () =>
      new TransactionCanceledException({
        message: "injected: Transaction cancelled [TransactionConflict, None]",
        $metadata,
        CancellationReasons: [{ Code: "TransactionConflict" }, { Code: "None" }],
      });
    const few = injectErrors(backend.client, ["TransactWriteItemsCommand"], 2, cancelled);
    await backend.saveTaskResult(id, "t0", text("zero-again"));
    expect(few.count).toBe(2);

    const before = comparable(await backend.loadSnapshot(id));
    const big = patternBytes(1024 * 1024, 5); // chunked: its chunks must not be left behind
    const always = injectErrors(backend.client, ["TransactWriteItemsCommand"], 10_000, cancelled);
    const error = await rejection(backend.saveTaskResult(id, "t1", big));
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).cause).toBeInstanceOf(TransactionCanceledException);
    expect(always.count).toBeGreaterThanOrEqual(4);
    always.remaining = 0;
    expect(comparable(await backend.loadSnapshot(id))).toEqual(before);
    expect((await itemsOf(backend)).filter((item) => isChunk(backend, item))).toEqual([]);
  });

  it("a crash between the chunks and the commit leaves the old state whole; cleanup() removes the orphans", async () => {
    const backend = await freshBackend({ tableName: await freshTable(ddb) });
    const id = uid();
    const old = atTask(id, "t2", { completed: { t1: patternBytes(700_000, 1) }, initialInput: text("in") });
    await backend.saveSnapshot(old);
    const committed = await itemsOf(backend);
    // The commit (the head's conditional put) fails in a way the adapter cannot tell from a lost
    // response, so it keeps what it wrote: exactly the state a process crash leaves.
    const crash = injectErrors(backend.client, ["PutItemCommand"], 1, () =>
      Object.assign(new Error("injected: socket hang up before the commit"), {
        name: "SimulatedCrash",
        $metadata,
      }),
    );
    const replacement = atTask(id, "t9", { completed: { t1: patternBytes(900_000, 2), t2: text("two") } });
    const error = await rejection(backend.saveSnapshot(replacement));
    expect(crash.count).toBe(1);
    expect(error).toMatchObject({ code: ErrorCode.Backend });
    expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(old));
    const after = await itemsOf(backend);
    expect(after.length).toBeGreaterThan(committed.length); // orphans: new chunks and result items
    expect(await backend.cleanup({ graceMs: 60_000 })).toEqual({ deletedItems: 0 }); // too young to touch
    const { deletedItems } = await backend.cleanup({ graceMs: 0 });
    expect(deletedItems).toBe(after.length - committed.length);
    expect((await itemsOf(backend)).map((i) => `${i.pk}|${i.sk}`).sort()).toEqual(
      committed.map((i) => `${i.pk}|${i.sk}`).sort(),
    );
    const loaded = await backend.loadSnapshot(id);
    expect(comparable(loaded)).toEqual(comparable(old));
    expect(
      loaded.state.kind === "InProgress" &&
        bytesEqual(loaded.state.completedTasks.t1?.output ?? new Uint8Array(), patternBytes(700_000, 1)),
    ).toBe(true);
  });

  it("throttled chunk writes that outlast the retries: BackendError, the stored snapshot unchanged", async () => {
    const backend = await freshBackend();
    const id = uid();
    const old = atTask(id, "t1", { completed: { t0: text("zero") } });
    await backend.saveSnapshot(old);
    const batches = injectErrors(
      backend.client,
      ["BatchWriteItemCommand"],
      1000,
      () =>
        new ProvisionedThroughputExceededException({ message: "injected: throughput exceeded", $metadata }),
    );
    const error = await rejection(
      backend.saveSnapshot(atTask(id, "t2", { completed: { t1: patternBytes(2_000_000, 9) } })),
    );
    expect(error).toBeInstanceOf(BackendError);
    expect((error as BackendError).cause).toBeInstanceOf(ProvisionedThroughputExceededException);
    expect(batches.count).toBeGreaterThanOrEqual(3);
    batches.remaining = 0;
    expect(comparable(await backend.loadSnapshot(id))).toEqual(comparable(old));
    expect((await backend.findAvailableTasks("w", 10)).map((t) => t.taskId)).toEqual(["t1"]);
  });

  it("a user-supplied client gets the same retries from its own configuration", async () => {
    await ensureTable(ddb);
    const client = new DynamoDBClient({ ...clientConfig(ddb), maxAttempts: 4 });
    onTestFinished(() => client.destroy());
    const backend = new DynamoDBBackend({ ...backendOptions(ddb), client, keyPrefix: uid("own") });
    const puts = injectErrors(
      client,
      ["PutItemCommand"],
      3,
      () => new ProvisionedThroughputExceededException({ message: "injected", $metadata }),
    );
    await backend.saveSnapshot(atTask(uid(), "t1"));
    expect(puts.count).toBe(3);
    await backend.close();
  });
});
