// What the store says at the end: every workflow settled as the controller left it (a cancelled one
// Cancelled, every other one Completed with the output workload.ts predicts) and no event left
// pending (each was consumed).
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import { text } from "@sayiir/worker";
import type { Controller } from "./controller.ts";
import type { Started } from "./feeder.ts";
import { expectedOutput } from "./workload.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A workflow whose events the controller could not be sure it sent may wait for ever: it is left out. */
function leftWaiting(controller: Controller, id: string, snapshot: WorkflowSnapshot | null): boolean {
  const plan = controller.plans.get(id);
  return plan?.kind === "events" && plan.uncertain === true && snapshot?.state.kind === "InProgress";
}

const finished = (s: WorkflowSnapshot | null) =>
  s !== null && (s.state.kind === "Completed" || s.state.kind === "Failed" || s.state.kind === "Cancelled");

/** Waits until every workflow has settled and the controller has nothing left to do, or the deadline. */
export async function drain(
  admin: PersistentBackend,
  started: ReadonlyMap<string, Started>,
  controller: Controller,
  deadline: number,
): Promise<void> {
  let pending = [...started.keys()];
  while (Date.now() < deadline) {
    await controller.tick();
    const still: string[] = [];
    for (const id of pending) {
      // A store that stopped answering fails each look only after its timeout: keep to the deadline.
      if (Date.now() >= deadline) return;
      const s = await admin.loadSnapshot(id).catch(() => null);
      if (!finished(s) && !leftWaiting(controller, id, s)) still.push(id);
    }
    pending = still;
    if (pending.length === 0 && controller.idle()) return;
    await sleep(200);
  }
}

export interface Outcomes {
  completed: number;
  cancelled: number;
  wrongOutput: number;
  /** Workflows left out: an event whose send failed may or may not have landed. */
  uncertain: number;
  violations: string[];
}

export async function checkOutcomes(
  admin: PersistentBackend,
  started: ReadonlyMap<string, Started>,
  controller: Controller,
): Promise<Outcomes> {
  const out: Outcomes = { completed: 0, cancelled: 0, wrongOutput: 0, uncertain: 0, violations: [] };
  for (const [id, { kind, input }] of started) {
    const s = await admin.loadSnapshot(id).catch(() => null);
    const plan = controller.plans.get(id);
    if (leftWaiting(controller, id, s)) {
      out.uncertain++;
      continue;
    }
    // A cancel that returned must have cancelled it; one whose answer was lost may have.
    const cancel = plan?.kind === "cancel" ? plan.done?.outcome : undefined;
    if (s?.state.kind === "Cancelled" && (cancel === "landed" || cancel === "unknown")) {
      out.cancelled++;
      continue;
    }
    if (cancel === "landed") {
      out.violations.push(`${id}: cancelled, yet ${s === null ? "missing" : s.state.kind}`);
      continue;
    }
    if (s?.state.kind !== "Completed") {
      out.violations.push(`${id}: not completed (${s === null ? "missing" : s.state.kind})`);
      continue;
    }
    out.completed++;
    const want = expectedOutput(kind, id, input);
    if (text(s.state.finalOutput) !== want) {
      out.wrongOutput++;
      out.violations.push(`${id}: wrong final output ${text(s.state.finalOutput)}, expected ${want}`);
    }
    if (plan?.kind === "events" && !plan.uncertain) {
      const left = await admin.loadPendingEvents(id).catch(() => []);
      if (left.length > 0)
        out.violations.push(
          `${id}: events ${left.map((e) => e.sequence).join(", ")} still pending after completion`,
        );
    }
  }
  return out;
}
