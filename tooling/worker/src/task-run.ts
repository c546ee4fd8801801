// The state of one claimed task while the worker runs it: the abort controller that a lost claim,
// a paused workflow or a crash fires, where the claim was lost (or the pause seen), and the
// checkpoint every step passes before it touches the backend.
import type { ClaimedTask } from "@sayiir/persistence-core";
import type { WorkerContext } from "./context.ts";
import type { TaskContext } from "./definition.ts";
import type { LostDuring, PausedDuring } from "./events.ts";

/** Thrown (and used as abort reason) when the task must stop: claim lost, workflow paused or worker crashed. */
export class TaskAborted extends Error {}

/** claimAvailableTasks handed out an input that is not the snapshot's: nothing is committed. */
export class InputMismatch extends Error {}

/** What a task function threw: fails the workflow (a backend error is retried instead). */
export class TaskFunctionError extends Error {}

export class TaskRun {
  /** When the run started (for the `committed` event's `ms`). */
  readonly started = Date.now();
  readonly controller = new AbortController();
  /** Where the claim was first found lost, if it was. */
  lostDuring: LostDuring | undefined;
  /** Where the workflow was first found paused, if it was (and the claim not lost first). */
  pausedDuring: PausedDuring | undefined;
  readonly worker: WorkerContext;
  readonly task: ClaimedTask;
  readonly #onCrash = () => this.controller.abort(new TaskAborted("crashed"));

  constructor(worker: WorkerContext, task: ClaimedTask) {
    this.worker = worker;
    this.task = task;
    worker.crash?.addEventListener("abort", this.#onCrash, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** What the task function gets besides its input (and, after a wait, its event or timeout). */
  get context(): TaskContext {
    const { instanceId, taskId, event, timedOut } = this.task;
    const context: TaskContext = {
      instanceId,
      taskId,
      workerId: this.worker.workerId,
      signal: this.signal,
      attempt: this.task.attempt ?? 1,
    };
    if (event !== undefined) context.event = event;
    if (timedOut === true) context.timedOut = true;
    return context;
  }

  /** The claim is gone: remember where first, abort the task. */
  lost(during: LostDuring): void {
    if (this.pausedDuring === undefined) this.lostDuring ??= during;
    this.controller.abort(new TaskAborted(`claim lost during ${during}`));
  }

  /**
   * The workflow is paused: stop the task (nothing may move the workflow on, and a result recorded
   * without moving on would leave the task with a result, never ready again after resume).
   */
  paused(during: PausedDuring): void {
    if (this.lostDuring === undefined) this.pausedDuring ??= during;
    this.controller.abort(new TaskAborted(`workflow paused (seen during ${during})`));
  }

  /** Throws TaskAborted when the claim was lost or the worker crashed. */
  checkpoint(): void {
    if (this.worker.crashed()) this.controller.abort(new TaskAborted("crashed"));
    if (this.controller.signal.aborted) throw new TaskAborted(String(this.controller.signal.reason));
  }

  /** Stops listening for the crash. */
  dispose(): void {
    this.worker.crash?.removeEventListener("abort", this.#onCrash);
  }
}

/** Runs a task function; what it throws becomes a TaskFunctionError (an abort stays an abort). */
export async function callTask(fn: () => Uint8Array | Promise<Uint8Array>): Promise<Uint8Array> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof TaskAborted) throw error;
    throw new TaskFunctionError(error instanceof Error ? error.message : String(error), { cause: error });
  }
}

const previewDecoder = new TextDecoder();

/** The first bytes of a value, as text, for events. */
export function preview(bytes: Uint8Array): string {
  const head = previewDecoder.decode(bytes.subarray(0, 120));
  return bytes.length > 120 ? `${head}... (${bytes.length} bytes)` : head;
}
