/**
 * The wake-ups part of the demo (issue 18): once the main run is over and every worker is idle
 * (inside waitForTasks, not sleeping), the coordinator saves one workflow at a time and measures
 * how long after the save returned a worker claimed its first task. A push backend (a listener
 * tells the waiting workers) wakes within milliseconds; a poll backend within its declared
 * bound. The check holds each wake-up under a bound: push 1 s, poll wakeBoundMs + 1 s.
 */
import { setTimeout as delay } from "node:timers/promises";
import { isFinished, type PersistentBackend } from "@sayiir/persistence-core";
import { bytes, evaluate, startWorkflow, type WorkflowDefinition } from "@sayiir/worker";
import type { Check } from "./checks.ts";

/** Workflows saved one after another while every worker is idle. */
export const WAKE_SAMPLES = 3;
/** Idle time before each save: long enough for every worker to be inside its wait. */
const IDLE_MS = 500;
/** How long the demo waits for a claim or a completion before calling the wake-up failed. */
const GIVE_UP_MS = 15_000;

export interface WakeRun {
  admin: PersistentBackend;
  runId: string;
  /** The workflow saved (its first task goes to the default queue) and its instant twin. */
  definition: WorkflowDefinition;
  reference: WorkflowDefinition;
  /** The run's expected outputs: the saved workflows are added, so the final checks verify them. */
  expected: Map<string, Uint8Array>;
  log: (line: string) => void;
}

export class WakeDemo {
  /** Instance id -> the local time (ms) its first claim was reported by the worker, in its process. */
  readonly #claims = new Map<string, number>();

  /** Records a claim; `at` is Date.now() in the worker's process (same machine, same clock). */
  claimed(instanceId: string, at: number): void {
    if (!this.#claims.has(instanceId)) this.#claims.set(instanceId, at);
  }

  /** Saves WAKE_SAMPLES workflows, one whenever every worker has been idle IDLE_MS; answers the check. */
  async run(run: WakeRun): Promise<Check> {
    const { wakeUps, wakeBoundMs } = run.admin.capabilities;
    const bound = wakeUps === "push" ? 1000 : wakeBoundMs + 1000;
    const latencies: number[] = [];
    for (let i = 0; i < WAKE_SAMPLES; i++) {
      await delay(IDLE_MS);
      const id = `${run.runId}/wake-${i}`;
      const input = bytes(`wake-${i}`);
      await startWorkflow(run.admin, run.definition, id, input);
      const savedAt = Date.now();
      run.expected.set(id, await evaluate(run.reference, input));
      const claimedAt = await this.#firstClaim(id, savedAt + GIVE_UP_MS);
      if (claimedAt === undefined) {
        run.log(
          `  ⏰ ${id.slice(run.runId.length + 1)} saved while idle: not claimed within ${GIVE_UP_MS} ms`,
        );
        return { ok: false, text: `idle workers woke: ${id} was never claimed (${wakeUps})` };
      }
      latencies.push(claimedAt - savedAt);
      run.log(
        `  ⏰ ${id.slice(run.runId.length + 1)} saved while every worker was idle: first task claimed ` +
          `${claimedAt - savedAt} ms after the save (wakeUps ${wakeUps})`,
      );
      // Let it finish so that every worker is idle again before the next save.
      await finished(run.admin, id, savedAt + GIVE_UP_MS);
    }
    const worst = Math.max(...latencies);
    return {
      ok: worst <= bound,
      text:
        `idle workers woke: ${WAKE_SAMPLES} workflows saved while every worker waited were first claimed ` +
        `${latencies.join(", ")} ms after the save (wakeUps ${wakeUps}${wakeUps === "poll" ? `, wakeBoundMs ${wakeBoundMs}` : ""}; bound ${bound} ms)`,
    };
  }

  /** The local time of the first claim of `id`, polled every 2 ms until `deadline`. */
  async #firstClaim(id: string, deadline: number): Promise<number | undefined> {
    while (!this.#claims.has(id) && Date.now() < deadline) await delay(2);
    return this.#claims.get(id);
  }
}

/** Waits (until `deadline`) for the workflow `id` to finish; the final checks say how it ended. */
async function finished(admin: PersistentBackend, id: string, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const snapshot = await admin.loadSnapshot(id).catch(() => undefined);
    if (snapshot !== undefined && isFinished(snapshot.state)) return;
    await delay(20);
  }
}
