// The soak's controller: what an operator and the outside world do, from the parent process, to
// workflows the workers are running. Control workflows are cancelled or paused (and resumed after
// a while) at a random moment; each approval workflow gets its two events before it waits, after,
// or one of each. What it did is recorded with local times (q: before the call, r: after it
// returned) for the analysis.
import { bytesEqual, type PersistentBackend, type WorkflowSnapshot } from "@sayiir/persistence-core";
import type { Started } from "./feeder.ts";
import { approvalPayloads, EVENT_NAME } from "./workload.ts";

/** A control workflow is acted on this long after its start: while its steps run. */
const ACT_AFTER_MS: [number, number] = [200, 1800];
/** How long a paused workflow stays paused: past a lease, so heartbeats must see the pause. */
const PAUSED_MS: [number, number] = [1200, 2200];

export interface CancelRecord {
  q: number;
  r: number;
  /** landed: returned; conflict: the workflow had finished; unknown: a BackendError (maybe landed). */
  outcome: "landed" | "conflict" | "unknown";
}

export interface PauseRecord {
  q: number;
  r: number;
  outcome: "landed" | "conflict" | "unknown";
  /** Where the workflow stood right after the pause returned, and right before the resume. */
  after?: string;
  beforeResume?: string;
  /** When the resume was called (the paused window is r..resumeQ) and when it returned. */
  resumeQ?: number;
  resumeR?: number;
}

export interface SentEvent {
  sequence: number;
  /** Which wait the workflow stood at when it was sent ("before" the first wait, or a wait's task id). */
  phase: string;
  q: number;
  r: number;
}

/** What the controller does to one workflow, and what it did. */
export type Plan =
  | { kind: "cancel"; actAt: number; done?: CancelRecord }
  | { kind: "pause"; actAt: number; done?: PauseRecord; resumeAt?: number }
  | {
      kind: "events";
      /** When each of the two events is sent: before the workflow waits, or once it waits for it. */
      timing: ["early" | "late", "early" | "late"];
      sent: SentEvent[];
      /** A send failed with a BackendError: it may have landed or not; the event checks skip it. */
      uncertain?: boolean;
    };

const between = ([min, max]: [number, number]) => min + Math.random() * (max - min);
const errorCode = (error: unknown) => (error as { code?: string }).code ?? "UNTYPED";

/** Where a workflow stands: its state, and its task or wait. */
export function positionOf(snapshot: WorkflowSnapshot | null): string {
  if (snapshot === null) return "missing";
  const s = snapshot.state;
  if (s.kind !== "InProgress" && s.kind !== "Paused") return s.kind;
  const p = s.position;
  const at = p.kind === "AtTask" ? p.taskId : p.kind === "AwaitingEvent" ? `await:${p.nextTaskId}` : p.kind;
  return `${s.kind}:${at}`;
}

export class Controller {
  readonly plans = new Map<string, Plan>();
  #controls = 0;
  #approvals = 0;
  #busy = false;
  readonly #admin: PersistentBackend;

  constructor(admin: PersistentBackend) {
    this.#admin = admin;
  }

  /** A workflow was started: plan what to do to it (control and approval workflows only). */
  async onStart(id: string, started: Started): Promise<void> {
    if (started.kind === "control") {
      const kind = this.#controls++ % 2 === 0 ? "cancel" : "pause";
      this.plans.set(id, { kind, actAt: started.at + between(ACT_AFTER_MS) });
    } else if (started.kind === "approval") {
      const timings = [
        ["early", "early"],
        ["late", "late"],
        ["early", "late"],
      ] as const;
      const timing = timings[this.#approvals++ % timings.length]!;
      const plan: Plan = { kind: "events", timing: [...timing], sent: [] };
      this.plans.set(id, plan);
      // Early events go right after the start, while the first step (20 ms of work at least) runs:
      // the store must keep them until the workflow waits.
      if (timing[0] === "early") await this.#send(id, plan, "before");
      if (timing[0] === "early" && timing[1] === "early") await this.#send(id, plan, "before");
    }
  }

  /** Nothing left to do: every action taken, every event sent. */
  idle(): boolean {
    for (const plan of this.plans.values()) {
      if (plan.kind === "events" && plan.sent.length < 2 && !plan.uncertain) return false;
      if (plan.kind !== "events" && plan.done === undefined) return false;
      if (plan.kind === "pause" && plan.done?.outcome !== "conflict" && plan.done?.resumeR === undefined)
        return false;
    }
    return true;
  }

  /** One round of actions that are due; never two rounds at once. */
  async tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (const [id, plan] of this.plans) {
        if (plan.kind === "cancel" && plan.done === undefined && Date.now() >= plan.actAt)
          await this.#cancel(id, plan);
        if (plan.kind === "pause") await this.#pauseOrResume(id, plan);
        if (plan.kind === "events" && plan.sent.length < 2 && !plan.uncertain)
          await this.#lateEvent(id, plan);
      }
    } finally {
      this.#busy = false;
    }
  }

  async #cancel(id: string, plan: Extract<Plan, { kind: "cancel" }>): Promise<void> {
    const q = Date.now();
    try {
      await this.#admin.cancelWorkflow(id, { reason: "soak", requestedBy: "soak-controller" });
      plan.done = { q, r: Date.now(), outcome: "landed" };
    } catch (error) {
      plan.done = { q, r: Date.now(), outcome: errorCode(error) === "CONFLICT" ? "conflict" : "unknown" };
    }
  }

  async #pauseOrResume(id: string, plan: Extract<Plan, { kind: "pause" }>): Promise<void> {
    if (plan.done === undefined) {
      if (Date.now() < plan.actAt) return;
      const q = Date.now();
      try {
        await this.#admin.pauseWorkflow(id, { reason: "soak", requestedBy: "soak-controller" });
        plan.done = { q, r: Date.now(), outcome: "landed" };
        plan.done.after = positionOf(await this.#admin.loadSnapshot(id).catch(() => null));
      } catch (error) {
        plan.done = { q, r: Date.now(), outcome: errorCode(error) === "CONFLICT" ? "conflict" : "unknown" };
      }
      plan.resumeAt = Date.now() + between(PAUSED_MS);
      return;
    }
    const done = plan.done;
    if (done.outcome === "conflict" || done.resumeR !== undefined || Date.now() < plan.resumeAt!) return;
    done.beforeResume = positionOf(await this.#admin.loadSnapshot(id).catch(() => null));
    done.resumeQ = Date.now();
    try {
      await this.#admin.resumeWorkflow(id);
      done.resumeR = Date.now();
    } catch (error) {
      // Not paused (the pause whose answer was lost did not land): nothing to resume. Else try again.
      if (errorCode(error) === "CONFLICT") done.resumeR = Date.now();
      else done.resumeQ = undefined;
    }
  }

  /** Sends the next late event once the workflow waits for it. */
  async #lateEvent(id: string, plan: Extract<Plan, { kind: "events" }>): Promise<void> {
    if (plan.timing[plan.sent.length] !== "late") return;
    const snapshot = await this.#admin.loadSnapshot(id).catch(() => null);
    const at = positionOf(snapshot);
    const wanted = plan.sent.length === 0 ? "InProgress:await:approve" : "InProgress:await:countersign";
    if (at === wanted) await this.#send(id, plan, at.slice("InProgress:await:".length));
  }

  async #send(id: string, plan: Extract<Plan, { kind: "events" }>, phase: string): Promise<void> {
    const payload = approvalPayloads(id)[plan.sent.length]!;
    const q = Date.now();
    try {
      const sequence = await this.#admin.sendEvent(id, EVENT_NAME, payload);
      plan.sent.push({ sequence, phase, q, r: Date.now() });
    } catch {
      // Its outcome is unknown, and sending it again could deliver it twice: pending, it landed;
      // otherwise the workflow's event checks (and its completion, if it still waits) are skipped.
      const pending = await this.#admin.loadPendingEvents(id).catch(() => null);
      const landed = pending?.find((e) => bytesEqual(e.payload, payload));
      if (landed === undefined) plan.uncertain = true;
      else plan.sent.push({ sequence: landed.sequence, phase, q, r: Date.now() });
    }
  }
}
