import { ErrorCode } from "@sayiir/persistence-core";
import { atTask, claimOrFail, sleep, text, uid } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { beforeNext, intercept } from "./faults.js";
import { freshBackend, rawItem } from "./helpers.js";
import { server } from "./subject.js";

// A refusal by expiry made durable (src/lapse.ts), the side the conformance kit's "in flight
// across the claim's end" cases do not reach: the holder's renewal in flight lands AFTER a fenced
// write of the same holder was refused as expired but BEFORE that refusal marked the claim lapsed.
// The refusal then does not stand (the claim is live again with its token): the write is judged
// again and lands, and no lapse is marked. Linearizably: the renewal, then the write.
const info = server();

describe.skipIf(info === null)("a refusal by expiry overtaken by a renewal in flight", () => {
  it("the refused write runs again and lands; the claim stays live, unmarked", async () => {
    const keyPrefix = uid("lapse");
    const holder = await freshBackend({ keyPrefix });
    const writer = await freshBackend({ keyPrefix });
    const id = uid();
    await holder.saveSnapshot(atTask(id, "t1"));
    const claim = await claimOrFail(holder, id, "t1", "holder", 200);
    // The renewal judges the claim live now; its transaction waits for `go`.
    let go: () => void = () => undefined;
    const released = new Promise<void>((resolve) => {
      go = resolve;
    });
    let renewal: Promise<unknown> = Promise.resolve();
    const held = beforeNext(holder.client, "TransactWriteItemsCommand", () => released);
    renewal = holder.extendTaskClaim(id, "t1", "holder", 60_000);
    await sleep(Math.max(0, (claim.expiresAt ?? 0) - Date.now()) + 100);
    // The write is refused by its condition (expired); before its refusal reads the claim to mark
    // it lapsed, the renewal lands.
    let refused = false;
    intercept(writer.client, "initialize", async (call, send) => {
      if (call.command === "TransactWriteItemsCommand") {
        try {
          return await send();
        } catch (error) {
          refused = true;
          throw error;
        }
      }
      if (refused && call.command === "GetItemCommand") {
        refused = false;
        go();
        await renewal;
      }
      return send();
    });
    await writer.saveTaskResult(id, "t1", text("after the renewal"), { claim });
    const renewed = (await renewal) as { expiresAt: number | null };
    expect(held.fired()).toBe(true);
    expect(renewed.expiresAt).toBeGreaterThan(Date.now());
    expect(new TextDecoder().decode(await writer.loadTaskResult(id, "t1"))).toBe("after the renewal");
    const stored = await rawItem(holder, id, holder.layout.claimSk("t1"));
    expect(stored.lp).toBeUndefined();
    // Still the holder's live claim: its heartbeat renews it.
    expect(await holder.extendTaskClaim(id, "t1", "holder", 60_000)).toMatchObject({ token: claim.token });
  });

  it("without a renewal, the refusal stands and marks the claim lapsed; still listed with its expiry", async () => {
    const holder = await freshBackend();
    const id = uid();
    await holder.saveSnapshot(atTask(id, "t1"));
    const claim = await claimOrFail(holder, id, "t1", "holder", 150);
    await sleep(Math.max(0, (claim.expiresAt ?? 0) - Date.now()) + 100);
    const refusal = await holder.saveTaskResult(id, "t1", text("late"), { claim }).catch((e: unknown) => e);
    expect(refusal).toMatchObject({ code: ErrorCode.ClaimLost });
    const stored = await rawItem(holder, id, holder.layout.claimSk("t1"));
    expect(Number(stored.lp?.N)).toBeGreaterThanOrEqual(claim.expiresAt ?? 0);
    expect(await holder.loadTaskClaims(id)).toEqual([
      expect.objectContaining({ token: claim.token, expiresAt: claim.expiresAt }),
    ]);
    // Released by its holder, the mark goes with it; the next claim carries none.
    await holder.releaseTaskClaim(id, "t1", "holder");
    expect((await rawItem(holder, id, holder.layout.claimSk("t1"))).lp).toBeUndefined();
    const next = await claimOrFail(holder, id, "t1", "next", 60_000);
    expect((await rawItem(holder, id, holder.layout.claimSk("t1"))).lp).toBeUndefined();
    await holder.saveTaskResult(id, "t1", text("next"), { claim: next });
  });
});
