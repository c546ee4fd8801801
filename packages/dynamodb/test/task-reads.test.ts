import { atTask, claimOrFail, finished, patternBytes, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { type Call, record } from "./faults.js";
import { freshBackend, rawHead } from "./helpers.js";
import { server } from "./subject.js";

const info = server();
const MiB = 1024 * 1024;

const commands = (seen: Call[]) => seen.map((c) => c.command);
/** The sort key (or chunk partition key) of a GetItem / BatchGetItem call. */
function keysOf(call: Call): string[] {
  const input = call.input as {
    Key?: Record<string, { S?: string }>;
    RequestItems?: Record<string, { Keys?: Array<Record<string, { S?: string }>> }>;
  };
  if (input.Key !== undefined) return [input.Key.SK?.S ?? ""];
  return Object.values(input.RequestItems ?? {}).flatMap((r) =>
    (r.Keys ?? []).map((k) => (k.SK?.S === "C" ? (k.PK?.S ?? "") : (k.SK?.S ?? ""))),
  );
}

describe.skipIf(info === null)("loadTaskResult and loadTaskClaims: what they read", () => {
  it("loadTaskResult reads the head's state (projected) and that one result item (and its chunks), nothing else", async () => {
    const backend = await freshBackend();
    const id = uid();
    const big = patternBytes(700_000, 2);
    await backend.saveSnapshot(
      atTask(id, "t3", { completed: { t1: big, t2: text("two") }, initialInput: patternBytes(MiB, 5) }),
    );
    const gen = (await rawHead(backend, id)).gen?.S as string;
    const { layout } = backend;

    let seen = record(backend.client);
    expect(new TextDecoder().decode((await backend.loadTaskResult(id, "t2")) ?? undefined)).toBe("two");
    expect(commands(seen)).toEqual(["GetItemCommand", "GetItemCommand"]);
    expect(seen.map(keysOf)).toEqual([["H"], [layout.resultSk(gen, "t2")]]);
    // Projected: the header and initial input stored inline on the head are not transferred.
    expect(seen[0]?.input.ProjectionExpression).toBeDefined();

    seen = record(backend.client);
    const read = await backend.loadTaskResult(id, "t1");
    expect(Buffer.from(read ?? new Uint8Array(0)).equals(Buffer.from(big))).toBe(true);
    expect(commands(seen).slice(0, 2)).toEqual(["GetItemCommand", "GetItemCommand"]);
    expect(seen.slice(2).every((c) => c.command === "BatchGetItemCommand")).toBe(true);
    expect(
      seen
        .slice(2)
        .flatMap(keysOf)
        .every((pk) => pk.startsWith(`${layout.base}C#`)),
    ).toBe(true);
    // Two chunks of t1 only (the initial input's three are not read).
    expect(seen.slice(2).flatMap(keysOf)).toHaveLength(2);

    const done = uid("done");
    await backend.saveSnapshot(finished(done, { kind: "Completed", finalOutput: patternBytes(MiB, 7) }));
    seen = record(backend.client);
    expect(await backend.loadTaskResult(done, "t1")).toBeNull();
    expect(commands(seen)).toEqual(["GetItemCommand"]);
  });

  it("loadTaskResult never misses a result while saves replace the generation under it", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text("v0") } }));
    let saving = true;
    const saves = (async () => {
      for (let i = 1; i <= 30; i++)
        await backend.saveSnapshot(atTask(id, "t2", { completed: { t1: text(`v${i}`) } }));
      saving = false;
    })();
    const reads: string[] = [];
    while (saving)
      reads.push(new TextDecoder().decode((await backend.loadTaskResult(id, "t1")) ?? undefined));
    await saves;
    expect(reads.length).toBeGreaterThan(0);
    expect(reads.every((r) => /^v\d+$/.test(r))).toBe(true);
  });

  it("loadTaskClaims is one Query of the instance's claim items", async () => {
    const backend = await freshBackend();
    const id = uid();
    await backend.saveSnapshot(atTask(id, "t1"));
    const claim = await claimOrFail(backend, id, "t1", "w", 60_000);
    await claimOrFail(backend, id, "t0", "w", null);
    await backend.releaseTaskClaim(id, "t0", "w");
    const seen = record(backend.client);
    expect(await backend.loadTaskClaims(id)).toEqual([
      {
        instanceId: id,
        taskId: "t1",
        workerId: "w",
        claimedAt: claim.claimedAt,
        expiresAt: claim.expiresAt,
        token: claim.token,
      },
    ]);
    expect(commands(seen)).toEqual(["QueryCommand"]);
  });
});
