import {
  isFinished,
  NotFoundError,
  type PersistentBackend,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { readWorkflow } from "./workflow.js";

/** What copying one workflow did. */
export interface CopyOutcome {
  /** false when the workflow was deleted from the source after it was listed. */
  copied: boolean;
  events: number;
  claims: number;
  /** Claims not re-taken: expired, or refused by the target (a live claim already there). */
  claimsSkipped: number;
}

/**
 * A finished workflow refuses sendEvent, yet may still hold events that came before it finished:
 * those go to a stand-in first (InProgress, not started: nothing to run, so no worker picks it
 * up), and the real snapshot is saved over it afterwards (InProgress -> finished is allowed).
 */
function standIn(snapshot: WorkflowSnapshot): WorkflowSnapshot {
  return {
    instanceId: snapshot.instanceId,
    definitionHash: snapshot.definitionHash,
    createdAt: snapshot.createdAt,
    updatedAt: snapshot.updatedAt,
    state: {
      kind: "InProgress",
      position: { kind: "NotStarted" },
      completedTasks: {},
      lastCompletedTaskId: null,
    },
  };
}

/**
 * Copies one workflow: its snapshot, then its pending events in order (re-sent: the target gives
 * them its own sequence and send time), then with `keepClaims` its claims still live, taken on
 * the target by the same worker for the time they had left (new tokens, the target's fencing).
 * Not atomic: a crash leaves it half-copied, which is why a resumed copy removes it first.
 */
export async function copyWorkflow(
  from: PersistentBackend,
  to: PersistentBackend,
  instanceId: string,
  options: { keepClaims: boolean; replace: boolean },
): Promise<CopyOutcome> {
  const view = await readWorkflow(from, instanceId, { claims: options.keepClaims });
  if (view === null) return { copied: false, events: 0, claims: 0, claimsSkipped: 0 };
  const { snapshot, events, claims } = view;
  // Into a non-empty target (--force) the workflow may be there already: replace it whole, or its
  // events would be appended twice and a finished one would refuse the stand-in.
  if (options.replace) await removeWorkflow(to, instanceId);
  const detour = events.length > 0 && isFinished(snapshot.state);
  await to.saveSnapshot(detour ? standIn(snapshot) : snapshot);
  for (const event of events) await to.sendEvent(instanceId, event.eventName, event.payload);
  if (detour) await to.saveSnapshot(snapshot);
  let taken = 0;
  let skipped = 0;
  for (const claim of claims) {
    const ttl = claim.expiresAt === null ? null : claim.expiresAt - Date.now();
    if (ttl !== null && ttl < 1) {
      skipped++;
      continue;
    }
    const retaken = await to.claimTask(instanceId, claim.taskId, claim.workerId, ttl);
    if (retaken === null) skipped++;
    else taken++;
  }
  return { copied: true, events: events.length, claims: taken, claimsSkipped: skipped };
}

/** Removes a workflow from the target, if there (a resumed copy clears a half-copied page). */
export async function removeWorkflow(to: PersistentBackend, instanceId: string): Promise<void> {
  try {
    await to.deleteSnapshot(instanceId);
  } catch (error) {
    if (!(error instanceof NotFoundError)) throw error;
  }
}
