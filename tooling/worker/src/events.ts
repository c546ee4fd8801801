// The public shapes of the worker loop: its options, the events it reports and its counters.
import type { EventRef, PersistentBackend } from "@sayiir/persistence-core";
import type { TaskAction, WorkflowDefinition } from "./definition.ts";

/** Where a claim was found lost (see the `lost` event). */
export type LostDuring = "heartbeat" | "load" | "commit" | "join-lock";

/** Where a task found its workflow paused (see the `paused` event). */
export type PausedDuring = "heartbeat" | "load" | "commit";

/** Everything the loop reports, in order, synchronously (write it to a log, count it, forward it). */
export type WorkerEvent =
  | {
      type: "claimed";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      at: number;
      /** Which run of the task (1 first; n + 1 after n failed runs or takeovers). */
      attempt: number;
      priority: number;
      queue: string;
    }
  | {
      /** The task function threw and its step retries: failTasks recorded the run; it runs again at retryAt. */
      type: "retrying";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      attempt: number;
      retryAt: number;
      error: string;
    }
  | {
      type: "committed";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      action: TaskAction["kind"];
      /** The instance is Completed by this write. */
      finished: boolean;
      /** A top-level workflow (not a fan-out child) is Completed by this write. */
      workflowCompleted: boolean;
      ms: number;
      /** The task after a wait: the event this write consumed. */
      event?: EventRef;
      /** The task after a wait: it ran because the wait timed out. */
      timedOut?: boolean;
      /** The next task was written with this runAt (a durable sleep): no claim of it before then. */
      runAt?: number;
    }
  | {
      type: "branch-recorded";
      workerId: string;
      parentId: string;
      branchTaskId: string;
      lockToken: number;
      /** This record was the last branch: the parent's join task is now ready. */
      joinReady: boolean;
    }
  | { type: "branch-already-recorded"; workerId: string; parentId: string; branchTaskId: string }
  | { type: "child-created"; workerId: string; instanceId: string; token: number }
  | {
      type: "lost";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      /** heartbeat: extend refused; load: the workflow had moved on; commit / join-lock: fenced write refused. */
      during: LostDuring;
    }
  | {
      /**
       * The task's workflow is paused: the task stopped early, wrote nothing, and its claim is
       * released (the next `released` event) so that it runs again once the workflow is resumed.
       */
      type: "paused";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      /** heartbeat: extend said workflowPaused; load: the snapshot was Paused; commit: the write was refused as the workflow is paused. */
      during: PausedDuring;
    }
  | { type: "released"; workerId: string; instanceId: string; taskId: string; token: number }
  | {
      /** claimAvailableTasks handed out an input that is not the snapshot's (a backend bug); not committed. */
      type: "input-mismatch";
      workerId: string;
      instanceId: string;
      taskId: string;
      token: number;
      got: string;
      expected: string;
    }
  | { type: "failed"; workerId: string; instanceId: string; taskId: string; error: string }
  | { type: "error"; workerId: string; instanceId?: string; taskId?: string; error: string };

export interface WorkerOptions {
  backend: PersistentBackend;
  workerId: string;
  /** The workflow definitions this worker can run (keyed by their hash). */
  workflows: WorkflowDefinition[];
  /** Lease of every claim (ms). Default 1000. */
  leaseMs?: number;
  /** Heartbeat period (ms): extendTaskClaim by leaseMs. Default leaseMs / 3. 0 disables heartbeats. */
  heartbeatMs?: number;
  /** Tasks in flight at once (claimed in batches of the free slots). Default 4. */
  batch?: number;
  /** The queues this worker serves (claimAvailableTasks { queues }). Default: the store's default, ["default"]. */
  queues?: string[];
  /**
   * Longest backoff after a failed claim or waitForTasks (ms); the backoff doubles from 5 ms up to
   * this. Default 200. (An idle worker does not sleep: it waits with waitForTasks.)
   */
  maxIdleMs?: number;
  /** timeoutMs of each idle waitForTasks (ms); the worker claims again after it. Default 30,000. */
  idleWaitMs?: number;
  /** Stop claiming, let the tasks in flight finish, then resolve. */
  signal?: AbortSignal;
  /**
   * Simulates a crash (kill -9): stop at once, abandon the tasks in flight without committing
   * or releasing them, stop the heartbeats. Their leases expire and other workers take over.
   */
  crash?: AbortSignal;
  onEvent?: (event: WorkerEvent) => void;
}

export interface WorkerStats {
  claimed: number;
  committed: number;
  lost: number;
  /** Tasks stopped because their workflow was paused (released, to run again after resume). */
  paused: number;
  failed: number;
  /** Failed runs of a retrying step handed back with a retry time (failTasks). */
  retried: number;
  errors: number;
}
