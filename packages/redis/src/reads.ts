import { compareIds, failures, type TaskClaim } from "@sayiir/persistence-core";
import type { ShardContext } from "./context.js";
import { bytes, toClaim } from "./replies.js";

/*
 * loadTaskResult and loadTaskClaims: one read-only script each on the instance hash, which reads
 * the fields it needs by name (never HGETALL), so a large snapshot beside them costs nothing.
 */

/** One task's output as loadSnapshot would show it (a Completed or Failed workflow shows none). */
export async function loadTaskResult(
  ctx: ShardContext,
  instanceId: string,
  taskId: string,
): Promise<Uint8Array | null> {
  const k = ctx.layout.instance(instanceId);
  const reply = (await ctx.call("loadTaskResult", "loadTaskResult", [k.meta, taskId], true)) as
    | Buffer[]
    | null;
  if (reply === null) throw failures.snapshotNotFound(instanceId);
  const output = reply[0];
  // bytes(): a view of a reply buffer nobody else holds, else a copy; the caller's own either way.
  return output === undefined ? null : bytes(output);
}

/** The instance's claims that are neither released nor revoked, by task id (code-point order). */
export async function loadTaskClaims(ctx: ShardContext, instanceId: string): Promise<TaskClaim[]> {
  const k = ctx.layout.instance(instanceId);
  const flat = (await ctx.call("loadTaskClaims", "loadTaskClaims", [k.meta])) as string[];
  const claims: TaskClaim[] = [];
  for (let i = 0; i + 4 < flat.length; i += 5) {
    const [taskId, token, at, exp, workerId] = flat.slice(i, i + 5) as [
      string,
      string,
      string,
      string,
      string,
    ];
    claims.push(toClaim(instanceId, taskId, workerId, token, at, exp));
  }
  return claims.sort((a, b) => compareIds(a.taskId, b.taskId));
}
