// The batch committer: steps finished at about the same time share one completeTasks call; each
// gets its own outcome; a failed call rejects each of its items.
import { BackendError, createSnapshot, ErrorCode, updatePosition } from "@sayiir/persistence-core";
import { describe, expect, it } from "vitest";
import { Committer } from "../src/committer.ts";
import { BACKENDS } from "./backends.ts";

async function storeWith(ids: string[]) {
  const { backend } = await BACKENDS.memory.create({});
  for (const id of ids) {
    await backend.saveSnapshot(updatePosition(createSnapshot(id, "h"), { kind: "AtTask", taskId: "t1" }));
  }
  const claims = await Promise.all(ids.map((id) => backend.claimTask(id, "t1", "w", 30_000)));
  return { backend, claims: claims.map((c) => c as NonNullable<typeof c>) };
}

describe("Committer", () => {
  it("commits that arrive together go in one completeTasks call, each with its own outcome", async () => {
    const { backend, claims } = await storeWith(["a", "b", "c", "d"]);
    const calls: number[] = [];
    const complete = backend.completeTasks.bind(backend);
    backend.completeTasks = async (items) => {
      calls.push(items.length);
      return complete(items);
    };
    const committer = new Committer(backend);
    const stale = { ...(claims[3] as NonNullable<(typeof claims)[3]>), token: 1 };
    const outcomes = await Promise.all([
      ...claims.slice(0, 3).map((claim) =>
        committer.commit({
          claim,
          output: new Uint8Array([1]),
          next: { kind: "Completed", finalOutput: new Uint8Array([1]) },
        }),
      ),
      committer.commit({ claim: stale, output: new Uint8Array([1]), next: { kind: "AtTask", taskId: "t2" } }),
    ]);
    expect(calls).toEqual([4]);
    expect(outcomes.map((o) => o?.code ?? null)).toEqual([null, null, null, ErrorCode.ClaimLost]);
    expect((await backend.loadSnapshot("a")).state.kind).toBe("Completed");
  });

  it("commits made while a call is in flight go together in the next call; a failed call rejects each of its items", async () => {
    const { backend, claims } = await storeWith(["a", "b", "c"]);
    const calls: number[] = [];
    let fail = false;
    const complete = backend.completeTasks.bind(backend);
    backend.completeTasks = async (items) => {
      calls.push(items.length);
      const failing = fail;
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (failing) throw new BackendError("completeTasks: injected");
      return complete(items);
    };
    const committer = new Committer(backend);
    const item = (i: number) => ({
      claim: claims[i] as NonNullable<(typeof claims)[0]>,
      output: new Uint8Array([i]),
    });
    const first = committer.commit(item(0));
    await new Promise((resolve) => setTimeout(resolve, 5)); // the first call is in flight
    fail = true;
    const later = [committer.commit(item(1)), committer.commit(item(2))];
    expect(await first).toBeNull();
    for (const p of later) await expect(p).rejects.toBeInstanceOf(BackendError);
    expect(calls).toEqual([1, 2]);
  });
});
