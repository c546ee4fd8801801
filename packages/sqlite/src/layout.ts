import type { StoredStatus } from "@sayiir/persistence-core/adapter";

/*
 * Storage layout. Every name is `<tablePrefix><name>`, quoted as an SQL identifier; ids are only
 * ever bound as parameters (TEXT, BINARY collation), never spliced into SQL.
 *
 *   <p>schema_version  (id = 1, version)                 the applied migration
 *   <p>token_sequence  (id = 1, last_token)              one global fencing-token counter
 *   <p>snapshots       (instance_id PK, header, status, definition_hash, initial_input,
 *                       last_completed_task_id, ready_task_id, updated_at)
 *   <p>results         (instance_id, task_id, output)    PK (instance_id, task_id)
 *   <p>claims          (instance_id, task_id, worker_id, token, claimed_at, expires_at)
 *                                                        PK (instance_id, task_id)
 *   <p>snapshots_ready partial index on snapshots (updated_at, instance_id)
 *                       WHERE ready_task_id IS NOT NULL: what discovery walks
 */

export interface Tables {
  schemaVersion: string;
  tokenSequence: string;
  snapshots: string;
  results: string;
  claims: string;
  readyIndex: string;
}

/** Quotes an identifier; the prefix is validated already, so this is belt and braces. */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function tableNames(prefix: string): Tables {
  const q = (name: string) => quoteIdentifier(prefix + name);
  return {
    schemaVersion: q("schema_version"),
    tokenSequence: q("token_sequence"),
    snapshots: q("snapshots"),
    results: q("results"),
    claims: q("claims"),
    readyIndex: q("snapshots_ready"),
  };
}

/** Values of snapshots.status. */
export const Status = {
  InProgress: "in_progress",
  Completed: "completed",
  Failed: "failed",
} as const;
export type Status = (typeof Status)[keyof typeof Status];

/** The snapshots.status value of each stored status (toStoredSnapshot's `status`). */
export const statusOf: Readonly<Record<StoredStatus, Status>> = {
  InProgress: Status.InProgress,
  Completed: Status.Completed,
  Failed: Status.Failed,
};
