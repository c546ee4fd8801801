import {
  ErrorCode,
  markCancelled,
  markCompleted,
  markTaskCompleted,
  updatePosition,
} from "@sayiir/persistence-core";
import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { atTask, claimOrFail, expectCode, inProgress, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import type { DynamoDBBackend } from "../src/index.js";
import { beforeNext, intercept, loseResponses } from "./faults.js";
import { freshBackend, rawItem } from "./helpers.js";
import { server } from "./subject.js";

// Races of cancel, pause and resume with the other writers, which the conformance kit (one call
// at a time) cannot provoke: a save that read the head before a transition, a claim taken while
// a cancel is in flight, a heartbeat that read the state before a cancel, a transition whose
// reply was lost. Each case runs two backends on one key prefix and stops the first one's
// request (test/faults.ts) while the second one writes.
const info = server();

/** Two backends on one key prefix: `a` is the one whose requests the test stops. */
async function twoBackends(): Promise<{ a: DynamoDBBackend; b: DynamoDBBackend }> {
  const keyPrefix = uid("ddbx");
  return { a: await freshBackend({ keyPrefix }), b: await freshBackend({ keyPrefix }) };
}

/** Runs `hook` once, right after the cancel's read of the instance's claim items. */
function afterClaimQuery(backend: DynamoDBBackend, hook: () => Promise<void>): { fired: () => boolean } {
  let fired = false;
  intercept(backend.client, "initialize", async (call, send) => {
    const out = await send();
    const values = call.input.ExpressionAttributeValues as Record<string, { S?: string }> | undefined;
    if (!fired && call.command === "QueryCommand" && values?.[":prefix"]?.S === "L#") {
      fired = true;
      await hook();
    }
    return out;
  });
  return { fired: () => fired };
}

const lost = () =>
  Object.assign(new Error("injected: response lost"), {
    name: "InternalServerError",
    $metadata: { httpStatusCode: 500 },
  });

const moved = (id: string) =>
  updatePosition(markTaskCompleted(atTask(id, "t1"), "t1", text("out")), { kind: "AtTask", taskId: "t2" });

describe.skipIf(info === null)("control races on DynamoDB", () => {
  it("a fenced save that read the head before a pause is judged again and refused, not written over it", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    const [task] = await a.claimAvailableTasks("w", 1, 60_000);
    if (task === undefined) throw new Error("nothing claimed");
    const hook = beforeNext(a.client, "TransactWriteItemsCommand", () =>
      b.pauseWorkflow(id, { reason: "incident" }),
    );
    await expectCode(a.saveSnapshot(moved(id), { claim: task.claim }), ErrorCode.Conflict);
    expect(hook.fired()).toBe(true);
    expect((await b.loadSnapshot(id)).state).toMatchObject({
      kind: "Paused",
      reason: "incident",
      position: { kind: "AtTask", taskId: "t1" },
    });
    expect(await b.findAvailableTasks("x", 10)).toEqual([]);
  });

  it("an unfenced save that read the head before a cancel does not bring the workflow back", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    const hook = beforeNext(a.client, "PutItemCommand", () => b.cancelWorkflow(id, { reason: "stop" }));
    await expectCode(a.saveSnapshot(moved(id)), ErrorCode.Conflict);
    expect(hook.fired()).toBe(true);
    expect((await b.loadSnapshot(id)).state).toMatchObject({ kind: "Cancelled", reason: "stop" });
    expect(await b.findAvailableTasks("x", 10)).toEqual([]);
  });

  it("a save that read the head before a pause and its resume lands, judged on the resumed state", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    const hook = beforeNext(a.client, "PutItemCommand", async () => {
      await b.pauseWorkflow(id);
      await b.resumeWorkflow(id);
    });
    await a.saveSnapshot(moved(id));
    expect(hook.fired()).toBe(true);
    const loaded = await b.loadSnapshot(id);
    expect(loaded.state).toMatchObject({ kind: "InProgress", position: { kind: "AtTask", taskId: "t2" } });
    expect((await b.findAvailableTasks("x", 10)).map((t) => t.taskId)).toEqual(["t2"]);
  });

  it("a claim-next that lands while a cancel is in flight is revoked by that cancel", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    let claimed: Awaited<ReturnType<DynamoDBBackend["claimAvailableTasks"]>> = [];
    const hook = afterClaimQuery(a, async () => {
      claimed = await b.claimAvailableTasks("w", 1, 60_000);
    });
    await a.cancelWorkflow(id, { reason: "stop" });
    expect(hook.fired()).toBe(true);
    const [task] = claimed;
    if (task === undefined) throw new Error("claim-next claimed nothing during the cancel");
    const claim = await rawItem(b, id, b.layout.claimSk("t1"));
    expect([claim.tok?.N, claim.w?.S, claim.exp?.N]).toEqual([
      String(task.claim.token),
      "w",
      String(REVOKED_EXPIRY),
    ]);
    await expectCode(b.extendTaskClaim(id, "t1", "w", 60_000), ErrorCode.ClaimLost);
    const done = markCompleted(markTaskCompleted(atTask(id, "t1"), "t1", text("o")), text("final"));
    await expectCode(b.saveSnapshot(done, { claim: task.claim }), ErrorCode.ClaimLost);
    expect((await b.loadSnapshot(id)).state).toMatchObject({ kind: "Cancelled", interruptedAtTaskId: "t1" });
  });

  it("a claimTask of the position's task while a cancel is in flight is revoked by that cancel", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    await claimOrFail(a, id, "t1", "w0", 60_000);
    await a.releaseTaskClaim(id, "t1", "w0"); // a tombstone: the next claim takes it over
    const other = uid();
    await a.saveSnapshot(atTask(other, "t1")); // no claim item at all
    for (const target of [id, other]) {
      let token = 0;
      const hook = afterClaimQuery(a, async () => {
        token = (await claimOrFail(b, target, "t1", "w", null)).token;
      });
      await a.cancelWorkflow(target);
      expect(hook.fired()).toBe(true);
      const claim = await rawItem(b, target, b.layout.claimSk("t1"));
      expect([claim.tok?.N, claim.w?.S, claim.exp?.N]).toEqual([String(token), "w", String(REVOKED_EXPIRY)]);
    }
  });

  it("what remains: a claim on another task, taken while a cancel is in flight, fences nothing and cannot be renewed", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    let side: Awaited<ReturnType<typeof claimOrFail>> | undefined;
    afterClaimQuery(a, async () => {
      side = await claimOrFail(b, id, "side", "w", 60_000);
    });
    await a.cancelWorkflow(id);
    if (side === undefined) throw new Error("no side claim");
    // Not revoked (the cancel never saw its item), but the workflow is Cancelled: no heartbeat,
    // no result.
    expect((await rawItem(b, id, b.layout.claimSk("side"))).exp?.N).toBe(String(side.expiresAt));
    await expectCode(b.extendTaskClaim(id, "side", "w", 60_000), ErrorCode.ClaimLost);
    await expectCode(b.saveTaskResult(id, "side", text("late"), { claim: side }), ErrorCode.Conflict);
  });

  it("the heartbeat's renewal checks, in its transaction, that the workflow was not cancelled since its read", async () => {
    const { a, b } = await twoBackends();
    const id = uid();
    await a.saveSnapshot(atTask(id, "t1"));
    await claimOrFail(a, id, "t1", "w", 60_000);
    // A Cancelled snapshot written by saveSnapshot revokes nothing: only the state check stops it.
    const hook = beforeNext(a.client, "TransactWriteItemsCommand", () =>
      b.saveSnapshot(markCancelled(atTask(id, "t1"), { reason: "saved" })),
    );
    await expectCode(a.extendTaskClaim(id, "t1", "w", 60_000), ErrorCode.ClaimLost);
    expect(hook.fired()).toBe(true);
    expect((await rawItem(a, id, a.layout.claimSk("t1"))).exp?.N).not.toBe(String(REVOKED_EXPIRY));
  });

  it("a pause, resume or cancel whose reply was lost (the SDK sends it again) reports success", async () => {
    const backend = await freshBackend();
    /** Runs `op` with the reply of its first `command` lost once (the SDK sends the same request again). */
    const losing = async (command: string, op: () => Promise<void>) => {
      const injection = loseResponses(backend.client, [command], 1, lost);
      await op();
      expect(injection.count).toBe(1);
    };
    const id = uid();
    await backend.saveSnapshot(inProgress(id)); // no task: plain UpdateItems
    await losing("UpdateItemCommand", () => backend.pauseWorkflow(id, { reason: "x" }));
    expect((await backend.loadSnapshot(id)).state).toMatchObject({ kind: "Paused", reason: "x" });
    await losing("UpdateItemCommand", () => backend.resumeWorkflow(id));
    expect((await backend.loadSnapshot(id)).state.kind).toBe("InProgress");
    await losing("UpdateItemCommand", () => backend.cancelWorkflow(id, { reason: "y" }));
    expect((await backend.loadSnapshot(id)).state).toMatchObject({ kind: "Cancelled", reason: "y" });
    // With more items (the position task's checks, the claims): a transaction, the same.
    const other = uid();
    await backend.saveSnapshot(atTask(other, "t1"));
    await claimOrFail(backend, other, "t1", "w", 60_000);
    await losing("UpdateItemCommand", () => backend.pauseWorkflow(other));
    await losing("TransactWriteItemsCommand", () => backend.resumeWorkflow(other));
    await losing("TransactWriteItemsCommand", () => backend.cancelWorkflow(other));
    expect((await backend.loadSnapshot(other)).state.kind).toBe("Cancelled");
    await expectCode(backend.extendTaskClaim(other, "t1", "w", 60_000), ErrorCode.ClaimLost);
  });
});
