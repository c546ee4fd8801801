import {
  createSnapshot,
  markCompleted,
  markFailed,
  markTaskCompleted,
  type PersistentBackend,
  updatePosition,
} from "@sayiir/persistence-core";

const text = (s: string) => new TextEncoder().encode(s);

/** Ids the seed writes, by what each shows. */
export const SEEDED = {
  ready: "wf-ready",
  scheduled: "wf-scheduled",
  claimed: "wf-claimed",
  stuck: "wf-stuck",
  awaiting: "wf-awaiting",
  paused: "wf-paused",
  retried: "wf-retried",
  completed: "wf-completed",
  failed: "wf-failed",
  cancelled: "wf-cancelled",
  binary: "wf-binary",
} as const;

/**
 * Writes a small store through the contract: every state, results (text and binary), pending
 * events (also on a finished workflow), attempts, a live claim and an expired one (stuck work).
 * Returns once the expired claim has expired.
 */
export async function seed(backend: PersistentBackend, now = Date.now()): Promise<void> {
  const base = (id: string) => createSnapshot(id, "def-1", { initialInput: text(`{"order":"${id}"}`), now });
  const at = (id: string, taskId: string, extra: object = {}) =>
    updatePosition(
      markTaskCompleted(base(id), "fetch", text('"fetched"'), now),
      { kind: "AtTask", taskId, ...extra },
      now,
    );
  await backend.saveSnapshot(at(SEEDED.ready, "charge", { queue: "billing", priority: 2 }));
  await backend.saveSnapshot(at(SEEDED.scheduled, "remind", { runAt: now + 3_600_000 }));
  await backend.saveSnapshot(at(SEEDED.claimed, "ship"));
  await backend.claimTask(SEEDED.claimed, "ship", "worker-a", 600_000);
  await backend.saveSnapshot(at(SEEDED.stuck, "ship"));
  await backend.claimTask(SEEDED.stuck, "ship", "worker-dead", 150);
  await backend.saveSnapshot(
    updatePosition(
      base(SEEDED.awaiting),
      { kind: "AwaitingEvent", eventName: "approve", nextTaskId: "after", timeoutAt: null },
      now,
    ),
  );
  await backend.sendEvent(SEEDED.awaiting, "note", text("first"));
  await backend.sendEvent(SEEDED.awaiting, "note", text("second"));
  await backend.saveSnapshot(at(SEEDED.paused, "charge"));
  await backend.pauseWorkflow(SEEDED.paused, { reason: "maintenance", requestedBy: "ops" });
  await backend.saveSnapshot(at(SEEDED.retried, "charge"));
  const claim = await backend.claimTask(SEEDED.retried, "charge", "worker-b", 60_000);
  if (claim === null) throw new Error("seed: claim refused");
  await backend.failTasks([{ claim, error: "card declined", retryAt: now + 600_000 }]);
  await backend.saveSnapshot(base(SEEDED.completed));
  await backend.sendEvent(SEEDED.completed, "late", text("after the end"));
  await backend.saveSnapshot(markCompleted(base(SEEDED.completed), text('{"ok":true}'), now));
  await backend.saveSnapshot(markFailed(base(SEEDED.failed), "boom", now));
  await backend.saveSnapshot(at(SEEDED.cancelled, "charge"));
  await backend.cancelWorkflow(SEEDED.cancelled, { reason: "customer asked" });
  await backend.saveSnapshot(
    markTaskCompleted(
      base(SEEDED.binary),
      "blob",
      Uint8Array.from({ length: 300 }, (_, i) => i % 256),
      now,
    ),
  );
  // The stuck claim must have expired before anyone looks.
  const until = Date.now() + 5_000;
  while ((await backend.loadTaskClaims(SEEDED.stuck)).some((c) => (c.expiresAt ?? 0) > Date.now() - 50)) {
    if (Date.now() > until) throw new Error("seed: claim did not expire");
    await new Promise((r) => setTimeout(r, 50));
  }
}
