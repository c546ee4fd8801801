/**
 * The demo's controller: what an operator and the outside world do to running workflows while the
 * workers run them. One slow workflow is cancelled mid-task, one is paused mid-task and resumed
 * later, and a batch of approval workflows wait for an "approval" event that the controller sends
 * over time (the first before any of them reaches its wait, the others while they wait); one more
 * never gets its approval and runs its timeout path. What it did and saw is kept for the checks.
 */
import type { PersistentBackend, WorkflowSnapshot } from "@sayiir/persistence-core";
import {
  bytes,
  type DemoWorkflows,
  evaluate,
  startWorkflow,
  taskCount,
  type WorkerEvent,
} from "@sayiir/worker";

/** When the controller acts on a control workflow: this long after its second step was claimed. */
const ACT_AFTER_CLAIM_MS = 250;
/** ... or at the latest this long after the start. */
const ACT_AT_LATEST_MS = 8_000;
/** How long the paused workflow stays paused (several leases: heartbeats must see it). */
const PAUSED_FOR_MS = 2_500;
/** The approvals after the first are sent one every this many ms. */
const APPROVAL_EVERY_MS = 600;

/** What the controller observed around a cancel or a pause (for the checks). */
export interface ControlRecord {
  id: string;
  /** When the operation returned (local clock). */
  at?: number;
  /** The snapshot right after the cancel or the pause. */
  after?: WorkflowSnapshot;
  /** Pause only: the snapshot right before the resume, and when the resume returned. */
  beforeResume?: WorkflowSnapshot;
  resumedAt?: number;
  error?: string;
}

export interface ApprovalRecord {
  id: string;
  payload: Uint8Array;
  sequence?: number;
  /** Where the workflow stood when its approval was sent. */
  phase?: "before the wait" | "while waiting" | "after the wait";
  error?: string;
}

/** Workflows of the controller, to create with the others: id -> definition and input. */
export interface ControlPlan {
  cancel: ControlRecord;
  pause: ControlRecord;
  approvals: ApprovalRecord[];
  /** The approval workflow that never gets its approval. */
  expiring: string;
  /** Expected final outputs (the cancelled workflow has none). */
  expected: Map<string, Uint8Array>;
  /** Tasks of all these workflows, and of the one to cancel. */
  tasks: number;
  cancelTasks: number;
}

/** Creates the controller's workflows and computes what they must produce. */
export async function createControlWorkflows(
  admin: PersistentBackend,
  workflows: DemoWorkflows,
  reference: DemoWorkflows,
  runId: string,
  approvalCount: number,
): Promise<ControlPlan> {
  const expected = new Map<string, Uint8Array>();
  const cancel = `${runId}/cancel`;
  const pause = `${runId}/pause`;
  const expiring = `${runId}/approval-expiring`;
  await startWorkflow(admin, workflows.control, cancel, bytes("order-to-cancel"));
  await startWorkflow(admin, workflows.control, pause, bytes("order-to-pause"));
  expected.set(pause, await evaluate(reference.control, bytes("order-to-pause")));
  const approvals: ApprovalRecord[] = [];
  for (let i = 0; i < approvalCount; i++) {
    const id = `${runId}/approval-${String(i).padStart(2, "0")}`;
    const payload = bytes(`ok-${i}-by-manager-${i % 3}`);
    await startWorkflow(admin, workflows.approval, id, bytes(`purchase-${i}`));
    expected.set(id, await evaluate(reference.approval, bytes(`purchase-${i}`), { approval: payload }));
    approvals.push({ id, payload });
  }
  await startWorkflow(admin, workflows.expiring, expiring, bytes("purchase-unanswered"));
  expected.set(expiring, await evaluate(reference.expiring, bytes("purchase-unanswered")));
  const tasks =
    2 * taskCount(workflows.control) +
    approvalCount * taskCount(workflows.approval) +
    taskCount(workflows.expiring);
  const cancelTasks = taskCount(workflows.control);
  return { cancel: { id: cancel }, pause: { id: pause }, approvals, expiring, expected, tasks, cancelTasks };
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** Acts on the plan as time passes and the workers report; `log` shows what it does. */
export class Controller {
  readonly plan: ControlPlan;
  readonly #admin: PersistentBackend;
  readonly #log: (line: string) => void;
  /** When the second step of the cancel / pause target was first claimed. */
  readonly #secondClaimed = new Map<string, number>();
  #sent = 0;
  #busy = false;
  /** Results the cancelled workflow never got (its tasks that will not run). */
  tasksDropped = 0;

  constructor(admin: PersistentBackend, plan: ControlPlan, log: (line: string) => void) {
    this.#admin = admin;
    this.plan = plan;
    this.#log = log;
  }

  /** The first approval, sent before any worker runs: kept until its workflow waits for it. */
  async start(): Promise<void> {
    await this.#sendApproval();
  }

  /** A worker's event (the controller acts a little after the control workflows' second step starts). */
  onEvent(event: WorkerEvent): void {
    if (event.type !== "claimed" || event.taskId !== "check") return;
    if (event.instanceId === this.plan.cancel.id || event.instanceId === this.plan.pause.id) {
      if (!this.#secondClaimed.has(event.instanceId)) this.#secondClaimed.set(event.instanceId, Date.now());
    }
  }

  /** Called every tick of the demo's loop; never runs two actions at once. */
  async tick(elapsedMs: number): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      await this.#act(elapsedMs);
    } finally {
      this.#busy = false;
    }
  }

  async #act(elapsedMs: number): Promise<void> {
    const { cancel, pause, approvals } = this.plan;
    if (cancel.at === undefined && cancel.error === undefined && this.#due(cancel.id, elapsedMs)) {
      await this.#cancel();
    }
    if (pause.at === undefined && pause.error === undefined && this.#due(pause.id, elapsedMs)) {
      await this.#pause();
    }
    if (pause.at !== undefined && pause.resumedAt === undefined && Date.now() - pause.at >= PAUSED_FOR_MS) {
      await this.#resume();
    }
    if (this.#sent < approvals.length && elapsedMs >= this.#sent * APPROVAL_EVERY_MS)
      await this.#sendApproval();
  }

  #due(id: string, elapsedMs: number): boolean {
    const claimed = this.#secondClaimed.get(id);
    return (
      (claimed !== undefined && Date.now() - claimed >= ACT_AFTER_CLAIM_MS) || elapsedMs >= ACT_AT_LATEST_MS
    );
  }

  async #cancel(): Promise<void> {
    const record = this.plan.cancel;
    try {
      await this.#admin.cancelWorkflow(record.id, {
        reason: "demo: order withdrawn",
        requestedBy: "demo-controller",
      });
      record.at = Date.now();
      record.after = await this.#admin.loadSnapshot(record.id);
      const state = record.after.state;
      const done = state.kind === "Cancelled" ? Object.keys(state.completedTasks).length : 0;
      this.tasksDropped = this.plan.cancelTasks - done;
      this.#log(
        `  ⊘ cancelled ${record.id} after ${done} of ${this.plan.cancelTasks} steps` +
          (state.kind === "Cancelled" && state.interruptedAtTaskId !== null
            ? ` (interrupted at ${state.interruptedAtTaskId})`
            : ""),
      );
    } catch (error) {
      record.error = `cancel: ${errorText(error)}`;
      this.#log(`  ! ${record.error}`);
    }
  }

  async #pause(): Promise<void> {
    const record = this.plan.pause;
    try {
      await this.#admin.pauseWorkflow(record.id, {
        reason: "demo: stock check",
        requestedBy: "demo-controller",
      });
      record.at = Date.now();
      record.after = await this.#admin.loadSnapshot(record.id);
      this.#log(`  ‖ paused ${record.id} at ${position(record.after)} for ${PAUSED_FOR_MS / 1000} s`);
    } catch (error) {
      record.error = `pause: ${errorText(error)}`;
      this.#log(`  ! ${record.error}`);
    }
  }

  async #resume(): Promise<void> {
    const record = this.plan.pause;
    try {
      record.beforeResume = await this.#admin.loadSnapshot(record.id);
      await this.#admin.resumeWorkflow(record.id);
      record.resumedAt = Date.now();
      this.#log(`  ▶ resumed ${record.id} at ${position(record.beforeResume)}`);
    } catch (error) {
      record.resumedAt = Date.now();
      record.error = `resume: ${errorText(error)}`;
      this.#log(`  ! ${record.error}`);
    }
  }

  async #sendApproval(): Promise<void> {
    const record = this.plan.approvals[this.#sent++];
    if (record === undefined) return;
    try {
      const before = await this.#admin.loadSnapshot(record.id);
      record.sequence = await this.#admin.sendEvent(record.id, "approval", record.payload);
      record.phase = phaseOf(before);
      this.#log(`  ✉ approval sent to ${record.id} ${record.phase} (event ${record.sequence})`);
    } catch (error) {
      record.error = `sendEvent: ${errorText(error)}`;
      this.#log(`  ! ${record.id}: ${record.error}`);
    }
  }

  /** A one-line status for the live view. */
  status(consumed: number, timedOut: number): string {
    const { cancel, pause, approvals } = this.plan;
    const paused =
      pause.at === undefined ? "pause pending" : pause.resumedAt === undefined ? "PAUSED" : "paused+resumed";
    return (
      `cancel ${cancel.at === undefined ? "pending" : "done"}, ${paused}, approvals ${this.#sent}/${approvals.length} sent` +
      ` ${consumed} consumed, ${timedOut} timed out`
    );
  }
}

function position(snapshot: WorkflowSnapshot): string {
  const state = snapshot.state;
  if (state.kind !== "InProgress" && state.kind !== "Paused") return state.kind;
  const p = state.position;
  return p.kind === "AtTask" ? p.taskId : p.kind;
}

function phaseOf(snapshot: WorkflowSnapshot): ApprovalRecord["phase"] {
  const state = snapshot.state;
  if (state.kind === "InProgress" && state.position.kind === "AwaitingEvent") return "while waiting";
  if (state.kind === "InProgress" && state.position.kind === "AtTask" && state.position.taskId === "request")
    return "before the wait";
  return "after the wait";
}
