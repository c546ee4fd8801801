/**
 * saveSnapshot's result rows. Runs inside the caller's BEGIN IMMEDIATE transaction. Only what
 * changed is written: a result the snapshot no longer has is deleted, a new one inserted, a
 * changed one updated, and an unchanged one left as it is (no row written, no page dirtied), so a
 * snapshot that adds one output to a hundred writes one row.
 */
import type { TaskResult } from "@sayiir/persistence-core";
import type { Queries } from "./queries.js";

export function saveResults(q: Queries, instanceId: string, results: readonly TaskResult[]): void {
  if (results.length === 0) {
    q.run("deleteResults", instanceId);
    return;
  }
  q.runNamed("deleteOtherResults", {
    id: instanceId,
    keep: JSON.stringify(results.map((r) => r.taskId)),
  });
  for (const result of results) q.run("saveResult", instanceId, result.taskId, result.output);
}
