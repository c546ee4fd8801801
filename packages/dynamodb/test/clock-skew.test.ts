import { ErrorCode, type TaskClaim } from "@sayiir/persistence-core";
import { atTask, expectCode, text, uid } from "@sayiir/persistence-core/conformance";
import { uniqueTestName } from "@sayiir/test-servers";
import { describe, expect, it, onTestFinished } from "vitest";
import { DynamoDBBackend } from "../src/index.js";
import { backendOptions, ensureTable, server } from "./subject.js";

// DynamoDB has no server clock in conditions: each client judges claims by its own clock. The
// holder stops trusting its claim at expiresAt (its clock); others take over only at
// expiresAt + clockSkewBudgetMs (their clock). Two clients whose clocks differ by less than the
// budget therefore never both hold a live claim. Clocks here are manual, so the sweep is exact.
const info = server();
const BUDGET = 200;
const T0 = 1_800_000_000_000;

async function pair(offsetMs: number) {
  const ddb = info as NonNullable<typeof info>;
  await ensureTable(ddb);
  const keyPrefix = uniqueTestName("skew");
  const time = { now: T0 };
  const a = new DynamoDBBackend(
    backendOptions(ddb, { keyPrefix, clockSkewBudgetMs: BUDGET, clock: () => time.now }),
  );
  const b = new DynamoDBBackend(
    backendOptions(ddb, { keyPrefix, clockSkewBudgetMs: BUDGET, clock: () => time.now + offsetMs }),
  );
  onTestFinished(async () => {
    await a.close();
    await b.close();
  });
  return { a, b, time };
}

/** Is A's claim live for A: does a write fenced with it land? */
async function holds(backend: DynamoDBBackend, claim: TaskClaim): Promise<boolean> {
  try {
    await backend.saveSnapshot(atTask(claim.instanceId, "t1", { initialInput: text("x"), updatedAt: T0 }), {
      claim,
    });
    return true;
  } catch (error) {
    expect(error).toMatchObject({ code: ErrorCode.ClaimLost });
    return false;
  }
}

/** Steps real time by 10 ms across A's expiry; returns the steps where each side held the task. */
async function sweep(offsetMs: number) {
  const { a, b, time } = await pair(offsetMs);
  const id = uid();
  await a.saveSnapshot(atTask(id, "t1", { updatedAt: T0 - 1000 }));
  const claimA = await a.claimTask(id, "t1", "worker-a", 300);
  if (claimA === null) throw new Error("claim failed");
  let takeover: TaskClaim | null = null;
  const overlaps: number[] = [];
  let lastAliveStep = -1;
  let takeoverStep = -1;
  for (let step = 0; step <= 100; step++) {
    time.now = T0 + step * 10;
    const aLive = await holds(a, claimA);
    if (aLive) lastAliveStep = step;
    if (takeover === null) {
      takeover = await b.claimTask(id, "t1", "worker-b", 60_000);
      if (takeover !== null) takeoverStep = step;
    }
    if (aLive && takeover !== null) overlaps.push(step);
  }
  // Once taken over, A's writes stay refused and extending is refused too.
  await expectCode(a.extendTaskClaim(id, "t1", "worker-a", 10_000), ErrorCode.ClaimLost);
  return { overlaps, takeover, takeoverStep, lastAliveStep, claimA };
}

describe.skipIf(info === null)("client clocks and the skew budget", () => {
  for (const offset of [BUDGET - 50, -(BUDGET - 50), 0]) {
    it(`clocks ${offset} ms apart (budget ${BUDGET} ms): never two live claims, and the task is taken over`, async () => {
      const { overlaps, takeover, takeoverStep, lastAliveStep, claimA } = await sweep(offset);
      expect(overlaps).toEqual([]);
      expect(takeover).not.toBeNull();
      expect(takeover?.token).toBeGreaterThan(claimA.token);
      expect(lastAliveStep).toBeLessThan(takeoverStep);
      // A held its claim until its own clock reached expiresAt (300 ms after T0).
      expect(lastAliveStep).toBe(29);
    });
  }

  it("clocks further apart than the budget can overlap: the budget is the safety margin", async () => {
    const { overlaps } = await sweep(BUDGET + 100);
    expect(overlaps.length).toBeGreaterThan(0);
  });

  it("the default budget is 200 ms", async () => {
    const ddb = info as NonNullable<typeof info>;
    await ensureTable(ddb);
    const keyPrefix = uniqueTestName("skewdef");
    const time = { now: T0 };
    const backend = new DynamoDBBackend(backendOptions(ddb, { keyPrefix, clock: () => time.now }));
    onTestFinished(() => backend.close());
    const id = uid();
    expect(await backend.claimTask(id, "t1", "w1", 100)).not.toBeNull();
    time.now = T0 + 100 + 199;
    expect(await backend.claimTask(id, "t1", "w2", 100)).toBeNull();
    time.now = T0 + 100 + 200;
    expect(await backend.claimTask(id, "t1", "w2", 100)).not.toBeNull();
  });
});
