// waitForTasks on MongoDB beyond the conformance group: what an idle waiter costs in commands,
// and what the probe answers (its due times) from the ready and timer indexes.
import type { WakeProbe } from "@sayiir/persistence-core";
import { queued, uid } from "@sayiir/persistence-core/conformance";
import { type Document, MongoClient } from "mongodb";
import { describe, expect, it, onTestFinished } from "vitest";
import { MongoBackend } from "../src/index.js";
import { createSubject, DATABASE, dropPrefix, freshPrefix, server } from "./subject.js";

/** The probe a wait runs, called directly. */
const probe = (backend: MongoBackend, queues: string[]): Promise<WakeProbe> =>
  (backend as unknown as { doProbeWakeUp(q: string[]): Promise<WakeProbe> }).doProbeWakeUp(queues);

describe.skipIf(server === null)("MongoDB wake-ups", () => {
  it("an idle waiter polls: over 2 s at most 2000 / wakeBoundMs + the ramp's probes, each a few finds of limit 1 and no body", async () => {
    const prefix = freshPrefix();
    const watched = new MongoClient(server?.url ?? "", { monitorCommands: true });
    const finds: Document[] = [];
    watched.on("commandStarted", (event) => {
      if (event.commandName === "find") finds.push(event.command as Document);
    });
    // The poll (where the server runs change streams, "off" asks for it; see change-stream.test.ts).
    const backend = new MongoBackend({
      client: watched,
      database: DATABASE,
      collectionPrefix: prefix,
      changeStreams: "off",
    });
    onTestFinished(async () => {
      await backend.close();
      await dropPrefix(watched, prefix);
      await watched.close();
    });
    await backend.migrate();
    expect(backend.capabilities).toMatchObject({ wakeUps: "poll", wakeBoundMs: 200 });
    finds.length = 0;
    const idleMs = 2_000;
    expect(await backend.waitForTasks({ queues: [uid("idle")], timeoutMs: idleMs })).toBe("timeout");
    for (const find of finds) {
      expect(find.find).toBe(`${prefix}snapshots`);
      expect(find.limit).toBe(1);
      // Index keys only: never the snapshot, its results or its events.
      expect(Object.keys(find.projection ?? {}).every((k) => ["_id", "ta", "qe", "te"].includes(k))).toBe(
        true,
      );
    }
    // An idle probe: two finds (claimable now?), then three (the next due time).
    const probes = finds.length / 5;
    expect(Number.isInteger(probes)).toBe(true);
    // The adaptive poll starts at 10 ms and doubles up to the bound: 5 looks before it is there.
    expect(probes).toBeLessThanOrEqual(idleMs / backend.capabilities.wakeBoundMs + 6);
    expect(probes).toBeGreaterThanOrEqual(3);
  }, 30_000);

  it("the probe: a future runAt is the next due time, a ready task is ready, a claim's expiry is the next due time", async () => {
    const { backend, cleanup } = await createSubject({}, { clock: "client" });
    onTestFinished(async () => {
      await backend.close();
      await cleanup?.();
    });
    const q = uid("q");
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: null });
    const runAt = Date.now() + 60_000;
    const sooner = Date.now() + 30_000;
    // The later one first in priority, the sooner one last: the earliest due time is across priorities.
    await backend.saveSnapshot(queued(uid("later"), q, runAt, 1));
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: runAt });
    await backend.saveSnapshot(queued(uid("sooner"), q, sooner, 5));
    expect(await probe(backend, [q, uid("other")])).toEqual({ ready: false, nextDueAt: sooner });
    await backend.saveSnapshot(queued(uid("now"), q));
    expect(await probe(backend, [uid("other"), q])).toEqual({ ready: true, nextDueAt: null });
    const [claimed] = await backend.claimAvailableTasks("w", 1, 10_000, { queues: [q] });
    expect(await probe(backend, [q])).toEqual({ ready: false, nextDueAt: claimed?.claim.expiresAt });
  }, 30_000);
});
