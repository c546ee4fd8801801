// completeTasks with `next` on DynamoDB: one TransactWriteItems per step, conditioned on the head
// as read; what a step reads and writes (the record middleware of test/faults.ts), how many
// requests a step and a batch take, and the races a step runs with: cancel, pause, sendEvent, a
// claim-next takeover, a stale completion and several clients at once.
import { TransactionCanceledException, type TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { ErrorCode, type NextStep, type TaskCompletion } from "@sayiir/persistence-core";
import {
  atTask,
  awaiting,
  claimOrFail,
  patternBytes,
  sleep,
  text,
  uid,
} from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { beforeNext, type Call, loseResponses, record } from "./faults.js";
import { freshBackend, rawHead } from "./helpers.js";
import { server } from "./subject.js";

const info = server();

const toT3: NextStep = { kind: "AtTask", taskId: "t3" };

/** Two backends (clients) on one key prefix: `a` is the one whose requests the test stops. */
async function twoBackends(extra: { clock?: () => number } = {}) {
  const keyPrefix = uid("ddbs");
  return { a: await freshBackend({ keyPrefix, ...extra }), b: await freshBackend({ keyPrefix }) };
}

/** A workflow at t2 with t1's (large, chunked) output and t0's small one. */
async function atT2(backend: DynamoDBBackend, id: string, t1 = patternBytes(700_000, 3)) {
  await backend.saveSnapshot(
    atTask(id, "t2", { completed: { t0: text("zero"), t1 }, last: "t1", initialInput: text("in") }),
  );
}

const step = (
  claim: TaskCompletion["claim"],
  output: string,
  next: NextStep,
  extra = {},
): TaskCompletion => ({
  claim,
  output: text(output),
  next,
  ...extra,
});

/** The sort keys a request reads (BatchGetItem, GetItem, Query prefix) or writes (per transaction item). */
function touched(call: Call): string[] {
  const sk = (key: unknown) => (key as { SK?: { S?: string } } | undefined)?.SK?.S ?? "?";
  if (call.command === "BatchGetItemCommand") {
    const requests = call.input.RequestItems as Record<string, { Keys: unknown[] }>;
    return Object.values(requests).flatMap((r) => r.Keys.map(sk));
  }
  if (call.command === "TransactWriteItemsCommand")
    return (call.input.TransactItems as TransactWriteItem[]).map((item) => {
      const [op, body] = Object.entries(item)[0] as [string, { Key?: unknown; Item?: unknown }];
      return `${op} ${sk(body.Key ?? body.Item)}`;
    });
  if (call.command === "GetItemCommand") return [sk(call.input.Key)];
  if (call.command === "QueryCommand")
    return [
      `query ${(call.input.ExpressionAttributeValues as Record<string, { S?: string }>)[":prefix"]?.S}`,
    ];
  return [call.command];
}

const commands = (seen: Call[]) => seen.map((c) => c.command);

/** The task ids claimable now among this instance's (findAvailableTasks). */
async function ready(backend: DynamoDBBackend, id: string): Promise<string[]> {
  return (await backend.findAvailableTasks("observer", 100))
    .filter((t) => t.instanceId === id)
    .map((t) => t.taskId);
}

describe.skipIf(info === null)("completeTasks with next (one write per step)", () => {
  it("a step reads the head and the claim only, writes the head, its result and the tombstone: no other output", async () => {
    const backend = await freshBackend();
    const id = uid();
    const big = patternBytes(700_000, 3);
    await atT2(backend, id, big);
    const claim = await claimOrFail(backend, id, "t2", "w");
    const { layout } = backend;
    const before = await rawHead(backend, id);
    const gen = before.gen?.S as string;
    const seen = record(backend.client);
    expect(await backend.completeTasks([step(claim, "two", toT3)])).toEqual([null]);
    expect(commands(seen)).toEqual(["BatchGetItemCommand", "TransactWriteItemsCommand"]);
    expect(touched(seen[0] as Call).sort()).toEqual(["H", layout.claimSk("t2")].sort());
    expect(touched(seen[1] as Call)).toEqual([
      "Update H",
      `Update ${layout.claimSk("t2")}`,
      `Put ${layout.resultSk(gen, "t2")}`,
      // t3 has no result: checked in the same transaction (it decides t3's readiness).
      `ConditionCheck ${layout.resultSk(gen, "t3")}`,
    ]);
    // No output but t2's travels: the head update carries the header, not t0's or t1's bytes.
    const body = JSON.stringify(seen[1]?.input, (_k, v) => (v instanceof Uint8Array ? v.byteLength : v));
    expect(body.length).toBeLessThan(4_000);
    const after = await backend.loadSnapshot(id);
    expect(after.state.kind === "InProgress" && Object.keys(after.state.completedTasks).sort()).toEqual([
      "t0",
      "t1",
      "t2",
    ]);
    const state = after.state.kind === "InProgress" ? after.state : undefined;
    expect(Buffer.from(state?.completedTasks.t1?.output ?? []).equals(Buffer.from(big))).toBe(true);
    expect(state?.position).toEqual(toT3);
    expect(after.initialInput).toEqual(text("in"));
    expect((await rawHead(backend, id)).gen?.S).toBe(gen);
  });

  it("requests: one BatchGetItem per batch and one transaction per step; an event adds one Query", async () => {
    const backend = await freshBackend();
    const ids = [uid(), uid(), uid()];
    for (const id of ids) await atT2(backend, id, text("one"));
    const claims = await Promise.all(ids.map((id) => claimOrFail(backend, id, "t2", "w")));
    let seen = record(backend.client);
    const outcomes = await backend.completeTasks([
      step(claims[0] as TaskCompletion["claim"], "a", toT3),
      step(claims[1] as TaskCompletion["claim"], "b", { kind: "Completed", finalOutput: text("done") }),
      { claim: claims[2] as TaskCompletion["claim"], output: text("c") },
    ]);
    expect(outcomes).toEqual([null, null, null]);
    // Besides the commits, the Completed step's cleanup after its commit (as a terminal
    // saveSnapshot's): the old generation's results queried and deleted.
    expect(commands(seen).sort()).toEqual([
      "BatchGetItemCommand",
      "BatchWriteItemCommand",
      "QueryCommand",
      "TransactWriteItemsCommand",
      "TransactWriteItemsCommand",
      "TransactWriteItemsCommand",
    ]);
    // Completed: the head (a fresh generation: no result is kept) and the tombstone only.
    const sizes = seen
      .filter((c) => c.command === "TransactWriteItemsCommand")
      .map((c) => (c.input.TransactItems as unknown[]).length)
      .sort();
    expect(sizes).toEqual([2, 3, 4]);

    // A step after a wait that consumes its event: one Query for the oldest pending one.
    const waiting = uid();
    await backend.saveSnapshot(awaiting(waiting, "go", "t2", { completed: { t1: text("one") } }));
    await backend.sendEvent(waiting, "go", text("yes"));
    const [claimed] = (await backend.claimAvailableTasks("w", 100, 60_000)).filter(
      (t) => t.instanceId === waiting,
    );
    if (claimed?.event === undefined) throw new Error("no event on the claimed task");
    seen = record(backend.client);
    expect(
      await backend.completeTasks([step(claimed.claim, "two", toT3, { consumeEvent: claimed.event })]),
    ).toEqual([null]);
    expect(commands(seen)).toEqual(["BatchGetItemCommand", "QueryCommand", "TransactWriteItemsCommand"]);
    expect(touched(seen[2] as Call).filter((t) => t.startsWith("Delete E#"))).toHaveLength(1);
    expect(await backend.loadPendingEvents(waiting)).toEqual([]);
  });

  it("step vs cancel: a cancel that lands between the step's read and its commit wins (it revoked the claim); the step writes nothing", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await atT2(a, id, text("one"));
    const claim = await claimOrFail(a, id, "t2", "w");
    const window = beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      await b.cancelWorkflow(id);
    });
    const [outcome] = await a.completeTasks([step(claim, "two", toT3)]);
    expect(window.fired()).toBe(true);
    expect(outcome?.code).toBe(ErrorCode.ClaimLost);
    const after = await a.loadSnapshot(id);
    expect(after.state.kind).toBe("Cancelled");
    expect(after.state.kind === "Cancelled" && Object.keys(after.state.completedTasks).sort()).toEqual([
      "t0",
      "t1",
    ]);
    expect(await ready(a, id)).toEqual([]);
  });

  it("step vs pause: a pause in the window refuses the step (claim kept); a pause that read before the step sees it", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await atT2(a, id, text("one"));
    const claim = await claimOrFail(a, id, "t2", "w");
    beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      await b.pauseWorkflow(id);
    });
    const [outcome] = await a.completeTasks([step(claim, "two", toT3)]);
    expect(outcome?.code).toBe(ErrorCode.Conflict);
    expect((await a.loadSnapshot(id)).state.kind).toBe("Paused");
    expect(await b.claimTask(id, "t2", "other", 60_000)).toBeNull();
    await b.resumeWorkflow(id);
    expect(await a.completeTasks([step(claim, "two", toT3)])).toEqual([null]);

    // The other way round: a pause reads the head at t3, a step to t4 lands, the pause commits.
    // Its condition on the head's nonce sends it back to read the stepped head: paused at t4.
    const t3 = await claimOrFail(b, id, "t3", "w");
    beforeNext(a.client, "UpdateItemCommand", async () => {
      expect(await b.completeTasks([step(t3, "three", { kind: "AtTask", taskId: "t4" })])).toEqual([null]);
    });
    await a.pauseWorkflow(id);
    const paused = await a.loadSnapshot(id);
    expect(paused.state.kind === "Paused" && paused.state.position).toEqual({ kind: "AtTask", taskId: "t4" });
    expect(paused.state.kind === "Paused" && Object.keys(paused.state.completedTasks).sort()).toEqual([
      "t0",
      "t1",
      "t2",
      "t3",
    ]);
  });

  it("step vs sendEvent: an event sent in the window of a step to its wait makes the next task ready", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await atT2(a, id, text("one"));
    const claim = await claimOrFail(a, id, "t2", "w");
    const wait: NextStep = { kind: "AwaitingEvent", eventName: "go", nextTaskId: "t3", timeoutAt: null };
    const seen = record(a.client);
    beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      await b.sendEvent(id, "go", text("yes"));
    });
    expect(await a.completeTasks([step(claim, "two", wait)])).toEqual([null]);
    // The first commit was refused (the event count moved), the second one found the event.
    expect(commands(seen).filter((c) => c === "TransactWriteItemsCommand")).toHaveLength(2);
    expect(await ready(a, id)).toEqual(["t3"]);
    const [claimed] = (await a.claimAvailableTasks("w", 100, 60_000)).filter((t) => t.instanceId === id);
    expect(claimed?.event?.eventName).toBe("go");
  });

  it("step vs claim-next takeover: a takeover in the window, or after the claim expired, leaves the stale step ClaimLost and nothing written", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await atT2(a, id, text("one"));
    const [mine] = (await a.claimAvailableTasks("w1", 10, 60_000)).filter((t) => t.instanceId === id);
    if (mine === undefined) throw new Error("not claimed");
    const head = await rawHead(a, id);
    beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      // Released under the holder (as after a crash and a lease sweep) and taken by claim-next.
      await b.releaseTaskClaim(id, "t2", "w1");
      const taken = (await b.claimAvailableTasks("w2", 10, 60_000)).filter((t) => t.instanceId === id);
      expect(taken).toHaveLength(1);
    });
    const [outcome] = await a.completeTasks([step(mine.claim, "two", toT3)]);
    expect(outcome?.code).toBe(ErrorCode.ClaimLost);
    const after = await rawHead(a, id);
    expect([after.gen, after.pos, after.last, after.nc, after.hd]).toEqual([
      head.gen,
      head.pos,
      head.last,
      head.nc,
      head.hd,
    ]);

    // Expiry: claim-next takes the task over once the lease (+ skew budget) ended; the stale step
    // is judged ClaimLost on what it read and writes nothing (one read of the claim checks that the
    // refusal stands, see lapse.ts: taken over, so there is no lapse to mark).
    const other = uid();
    await atT2(a, other, text("one"));
    const [short] = (await a.claimAvailableTasks("w1", 10, 150)).filter((t) => t.instanceId === other);
    if (short === undefined) throw new Error("not claimed");
    await sleep(150 + 250);
    const [taken] = (await b.claimAvailableTasks("w2", 10, 60_000)).filter((t) => t.instanceId === other);
    expect(taken).toMatchObject({ taskId: "t2", attempt: 2 });
    const seen = record(a.client);
    const [stale] = await a.completeTasks([step(short.claim, "two", toT3)]);
    expect(stale?.code).toBe(ErrorCode.ClaimLost);
    expect(commands(seen)).toEqual(["BatchGetItemCommand", "GetItemCommand"]);
    if (taken === undefined) throw new Error("not taken");
    expect(await b.completeTasks([step(taken.claim, "two", toT3)])).toEqual([null]);

    // A takeover that leaves the head as it was (claimTask after a release): the fence alone.
    const third = uid();
    await atT2(a, third, text("one"));
    const held = await claimOrFail(a, third, "t2", "w1");
    const before = await rawHead(a, third);
    beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      await b.releaseTaskClaim(third, "t2", "w1");
      expect(await b.claimTask(third, "t2", "w2", 60_000)).not.toBeNull();
    });
    const [fenced] = await a.completeTasks([step(held, "two", toT3)]);
    expect(fenced?.code).toBe(ErrorCode.ClaimLost);
    expect(await rawHead(a, third)).toEqual(before);
  });

  it("a completion without next that read the head before a step is judged again: the next task it completed is not left ready", async () => {
    // `a` runs 5 s ahead: its updatedAt is past the step's, so only the head's nonce tells it moved.
    const { a, b } = await twoBackends({ clock: () => Date.now() + 5_000 });
    const id = uid();
    await atT2(a, id, text("one"));
    const t2 = await claimOrFail(b, id, "t2", "w");
    const t3 = await claimOrFail(a, id, "t3", "w");
    beforeNext(a.client, "TransactWriteItemsCommand", async () => {
      expect(await b.completeTasks([step(t2, "two", toT3)])).toEqual([null]);
    });
    expect(await a.completeTasks([{ claim: t3, output: text("three") }])).toEqual([null]);
    // t3 has its result: the step made it the position, the late result must take it out of the index.
    expect(await ready(a, id)).toEqual([]);
    const state = (await a.loadSnapshot(id)).state;
    expect(state.kind === "InProgress" && Object.keys(state.completedTasks).sort()).toEqual([
      "t0",
      "t1",
      "t2",
      "t3",
    ]);
  });

  it("a step whose commit landed but whose response was lost (resent after a conflict) is a success", async () => {
    const backend = await freshBackend();
    const id = uid();
    await atT2(backend, id);
    const claim = await claimOrFail(backend, id, "t2", "w");
    const lost = loseResponses(
      backend.client,
      ["TransactWriteItemsCommand"],
      1,
      () =>
        new TransactionCanceledException({
          message: "injected: Transaction cancelled [TransactionConflict]",
          $metadata: { httpStatusCode: 400 },
          CancellationReasons: [{ Code: "TransactionConflict" }],
        }),
    );
    const big = patternBytes(800_000, 7); // chunked: its chunks must be kept
    expect(await backend.completeTasks([{ claim, output: big, next: toT3 }])).toEqual([null]);
    expect(lost.count).toBe(1);
    const state = (await backend.loadSnapshot(id)).state;
    expect(state.kind === "InProgress" && state.position).toEqual(toT3);
    const t2 = state.kind === "InProgress" ? state.completedTasks.t2?.output : undefined;
    expect(Buffer.from(t2 ?? []).equals(Buffer.from(big))).toBe(true);
    expect(await ready(backend, id)).toEqual(["t3"]);
  });

  it("several clients step different workflows at once: one transaction per step, each workflow moves once per task", async () => {
    const keyPrefix = uid("ddbs");
    const clients = await Promise.all([0, 1, 2].map(() => freshBackend({ keyPrefix })));
    const ids = Array.from({ length: 9 }, () => uid());
    for (const id of ids) await (clients[0] as DynamoDBBackend).saveSnapshot(atTask(id, "t1"));
    const seen = clients.map((c) => record(c.client));
    let steps = 0;
    for (const round of ["t1", "t2"]) {
      await Promise.all(
        clients.map(async (client, n) => {
          const claimed = await client.claimAvailableTasks(`w${n}`, 3, 60_000);
          const outcomes = await client.completeTasks(
            claimed.map((t) =>
              step(
                t.claim,
                `${t.taskId}`,
                round === "t1"
                  ? { kind: "AtTask", taskId: "t2" }
                  : { kind: "Completed", finalOutput: text("ok") },
              ),
            ),
          );
          expect(outcomes).toEqual(claimed.map(() => null));
          steps += claimed.length;
        }),
      );
    }
    expect(steps).toBe(ids.length * 2);
    // One transaction per step (the ones that release a claim as completed: its tombstone's `cn`).
    const commits = seen
      .flat()
      .filter((c) => c.command === "TransactWriteItemsCommand")
      .filter((c) => JSON.stringify(c.input.TransactItems).includes('"#cn"'));
    expect(commits).toHaveLength(ids.length * 2);
    for (const id of ids) expect((await clients[1]?.loadSnapshot(id))?.state.kind).toBe("Completed");
  });
});
