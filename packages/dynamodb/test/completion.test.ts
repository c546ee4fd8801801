// The pure parts of completeTasks (no server needed): cutting a batch under the transaction
// limits, and the transaction of one cut.
import { describe, expect, it } from "vitest";
import {
  COMPLETION_OVERHEAD,
  completionTransaction,
  cut,
  type Entry,
  MAX_COMPLETIONS_PER_TRANSACTION,
  MAX_TRANSACTION_BYTES,
  MAX_TRANSACTION_ITEMS,
} from "../src/completion-plan.js";
import { Layout } from "../src/layout.js";

const layout = new Layout("app/", 8);
const head = {
  pk: layout.instancePk("i"),
  instanceId: "i",
  generation: "g1",
  updatedAt: 5_000,
  ready: true,
  positionTaskId: "t1",
};
const entry = (taskId: string, prior: Entry["prior"] = { kind: "none" }): Entry => ({
  taskId,
  token: 42,
  nonce: `n-${taskId}`,
  ref: { inline: new Uint8Array([1, 2, 3]) },
  prior,
});

describe("completeTasks transactions", () => {
  it("cuts under 100 items and the byte budget, in order, never leaving an empty cut", () => {
    expect(1 + 2 * MAX_COMPLETIONS_PER_TRANSACTION).toBeLessThanOrEqual(MAX_TRANSACTION_ITEMS);
    const counts = cut(
      Array.from({ length: 120 }, (_, i) => i),
      () => 0,
    ).map((g) => g.length);
    expect(counts).toEqual([49, 49, 22]);
    const big = MAX_TRANSACTION_BYTES / 3;
    expect(cut([1, 2, 3, 4], () => big).map((g) => g)).toEqual([
      [1, 2],
      [3, 4],
    ]);
    // One value over the budget on its own still goes (alone): inline values are capped far below it.
    expect(cut([1, 2], () => MAX_TRANSACTION_BYTES)).toEqual([[1], [2]]);
    expect(cut([], () => COMPLETION_OVERHEAD)).toEqual([]);
  });

  it("the head once, then a conditioned result put and claim tombstone per completion", () => {
    const { items, after } = completionTransaction({
      tableName: "t",
      layout,
      head,
      entries: [
        entry("t2"),
        entry("t1", { kind: "chunks", chunkSetId: "old" }),
        entry("t3", { kind: "inline" }),
      ],
      now: 4_000,
      tombstoneTtl: 99,
    });
    expect(items).toHaveLength(7);
    const update = items[0]?.Update;
    // The position's task completes: the head leaves the ready index; updatedAt never goes back.
    expect(update?.UpdateExpression).toBe("SET #last = :last, #upd = :upd REMOVE #GPK, #GSK");
    expect(update?.ExpressionAttributeValues?.[":last"]).toEqual({ S: "t3" });
    expect(update?.ExpressionAttributeValues?.[":upd"]).toEqual({ N: "5000" });
    expect(update?.ConditionExpression).toContain("#gen = :gen AND #st = :P AND #upd <= :upd");
    expect(after).toMatchObject({ ready: false, updatedAt: 5_000 });
    expect(items.filter((i) => i.Put).map((i) => i.Put?.ConditionExpression)).toEqual([
      "attribute_not_exists(#PK)",
      "#c = :c",
      "attribute_exists(#PK) AND attribute_not_exists(#c)",
    ]);
    const claim = items[2]?.Update;
    expect(claim?.Key?.SK).toEqual({ S: layout.claimSk("t2") });
    expect(claim?.ConditionExpression).toBe(
      "#tok = :tok AND attribute_exists(#w) AND attribute_not_exists(#lp) AND (attribute_not_exists(#exp) OR #exp > :now)",
    );
    expect(claim?.ExpressionAttributeValues).toMatchObject({
      ":tok": { N: "42" },
      ":now": { N: "4000" },
      ":cn": { S: "n-t2" },
    });
  });

  it("another task's result moves a ready (or leased) head to the ready partition with the new updatedAt", () => {
    const { items, after } = completionTransaction({
      tableName: "t",
      layout,
      head,
      entries: [entry("t2")],
      now: 7_000,
      tombstoneTtl: 99,
    });
    const update = items[0]?.Update;
    expect(update?.UpdateExpression).toBe("SET #last = :last, #upd = :upd, #GPK = :gpk, #GSK = :gsk");
    expect(update?.ExpressionAttributeValues?.[":gsk"]).toEqual({ S: layout.readySk(7_000, 3, "i") });
    expect(after).toMatchObject({ ready: true, updatedAt: 7_000 });
    const notReady = completionTransaction({
      tableName: "t",
      layout,
      head: { ...head, ready: false },
      entries: [entry("t1")],
      now: 7_000,
      tombstoneTtl: 99,
    });
    expect(notReady.items[0]?.Update?.UpdateExpression).toBe("SET #last = :last, #upd = :upd");
    expect(notReady.items[0]?.Update?.ConditionExpression).toContain("attribute_not_exists(#GPK)");
  });
});
