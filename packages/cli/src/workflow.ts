import {
  NotFoundError,
  type PendingEvent,
  type PersistentBackend,
  type SnapshotPage,
  type TaskClaim,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";

/** Everything the contract shows of one workflow: the snapshot, its claims and its pending events. */
export interface WorkflowView {
  snapshot: WorkflowSnapshot;
  claims: TaskClaim[];
  events: PendingEvent[];
}

/** Runs a read, answering null when the workflow is gone (deleted since it was listed). */
export async function orGone<T>(read: () => Promise<T>): Promise<T | null> {
  try {
    return await read();
  } catch (error) {
    if (error instanceof NotFoundError) return null;
    throw error;
  }
}

/** Reads one workflow through the contract only, so it works the same on every backend. */
export async function readWorkflow(
  backend: PersistentBackend,
  instanceId: string,
  options: { claims?: boolean } = {},
): Promise<WorkflowView | null> {
  const snapshot = await orGone(() => backend.loadSnapshot(instanceId));
  if (snapshot === null) return null;
  const [events, claims] = await Promise.all([
    orGone(() => backend.loadPendingEvents(instanceId)),
    options.claims === false ? Promise.resolve([]) : backend.loadTaskClaims(instanceId),
  ]);
  if (events === null) return null;
  return { snapshot, claims, events };
}

/** Walks the store's instance ids one page at a time (bounded memory on any store size). */
export async function* pages(
  backend: PersistentBackend,
  pageSize: number,
  cursor: string | null = null,
): AsyncGenerator<{ ids: string[]; cursor: string | null; nextCursor: string | null }> {
  let current = cursor;
  do {
    const page: SnapshotPage = await backend.listSnapshotsPage({ cursor: current, limit: pageSize });
    yield { ids: page.instanceIds, cursor: current, nextCursor: page.nextCursor };
    current = page.nextCursor;
  } while (current !== null);
}
