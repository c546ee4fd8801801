// Which blobs a writer may collect after its commit (no server needed): only those of a commit
// known not to have landed. The end-to-end cases are in unknown-commit.test.ts.
import {
  MongoNetworkError,
  MongoNetworkTimeoutError,
  MongoServerError,
  MongoServerSelectionError,
  MongoWriteConcernError,
} from "mongodb";
import { describe, expect, it } from "vitest";
import { PendingBlobs, writeRefused } from "../src/pending-blobs.js";

const failing = (error: unknown) => async (): Promise<boolean> => {
  throw error;
};

describe("PendingBlobs", () => {
  it("a commit that landed keeps its blobs; one whose compare-and-set matched nothing gives them back", async () => {
    const pending = new PendingBlobs();
    expect(await pending.commit(["a", "b"], async () => false)).toBe(false);
    expect(pending.collectable(["a", "b", "c"])).toEqual(["a", "b", "c"]);
    // A retry of the same blobs that lands.
    expect(await pending.commit(["a", "b"], async () => true)).toBe(true);
    expect(pending.collectable(["a", "b", "c"])).toEqual(["c"]);
  });

  it("a commit that failed without a reply (it may have landed) keeps its blobs", async () => {
    for (const error of [
      new MongoNetworkError("connection closed"),
      new MongoNetworkTimeoutError("timed out"),
      new Error("anything else"),
      new MongoServerError({ message: "not primary", code: 10107 }),
    ]) {
      const pending = new PendingBlobs();
      await expect(pending.commit(["a"], failing(error))).rejects.toBe(error);
      expect(pending.collectable(["a"]), String(error)).toEqual([]);
    }
  });

  it("a write the server refused (nothing applied) gives its blobs back", async () => {
    const pending = new PendingBlobs();
    const error = new MongoServerError({ message: "document too large", code: 10334 });
    await expect(pending.commit(["a"], failing(error))).rejects.toBe(error);
    expect(pending.collectable(["a"])).toEqual(["a"]);
  });

  it("commits of several instances share one PendingBlobs: each outcome decides only its own blobs", async () => {
    const pending = new PendingBlobs();
    await Promise.allSettled([
      pending.commit(["landed"], async () => true),
      pending.commit(["lost"], failing(new MongoNetworkError("closed"))),
      pending.commit(["refused"], failing(new MongoServerError({ message: "invalid", code: 66 }))),
      pending.commit(["raced"], async () => false),
    ]);
    expect(pending.collectable(["landed", "lost", "refused", "raced"])).toEqual(["refused", "raced"]);
  });
});

describe("writeRefused", () => {
  it("is true only for a server's refusal of the write itself", () => {
    expect(writeRefused(new MongoServerError({ message: "immutable _id", code: 66 }))).toBe(true);
    expect(writeRefused(new MongoServerError({ message: "too large", code: 17419 }))).toBe(true);
    expect(writeRefused(new MongoServerError({ message: "shutting down", code: 91 }))).toBe(false);
    expect(writeRefused(new MongoServerError({ message: "no code" }))).toBe(false);
    expect(writeRefused(new MongoNetworkError("closed"))).toBe(false);
    expect(writeRefused(new MongoServerSelectionError("no server", { type: "Unknown" } as never))).toBe(
      false,
    );
    // A write-concern error follows a write that WAS applied, whatever its code says.
    const applied = new MongoWriteConcernError({
      writeConcernError: { code: 2, errmsg: "bad" },
      ok: 1,
    } as never);
    expect(applied).toBeInstanceOf(MongoServerError);
    expect(writeRefused(applied)).toBe(false);
  });
});
