import { BackendError, ValidationError } from "@sayiir/persistence-core";
import type { ChainableCommander, Cluster, Redis } from "ioredis";
import type { ScriptArg, ScriptName } from "./scripts/index.js";

/**
 * Option `replicaAcks`: after every write script, `WAIT replicas timeoutMs` on the connection that
 * ran it, and a write fewer replicas acknowledged is reported as a BackendError (it may be lost on
 * failover) instead of a success. Replication stays asynchronous: WAIT only tells the caller how far
 * the write got; it neither undoes it nor makes a failover pick a replica that has it.
 */
export interface ReplicaAcks {
  /** How many replicas must have acknowledged the write (WAIT's numreplicas). At least 1. */
  replicas: number;
  /** How long WAIT may block, in ms (never 0, which is WAIT's "for ever"). */
  timeoutMs: number;
}

/** Scripts that only read: no WAIT after them (they replicate nothing). */
const READ_ONLY: ReadonlySet<ScriptName> = new Set<ScriptName>([
  "loadSnapshot",
  "loadTaskResult",
  "loadTaskClaims",
  "loadHeader",
  "loadEvents",
  "loadSteps",
]);

export function normalizeReplicaAcks(value: unknown, operationTimeoutMs: number): ReplicaAcks | undefined {
  if (value === undefined) return undefined;
  const { replicas, timeoutMs } = (value ?? {}) as Partial<ReplicaAcks>;
  const int = (v: unknown, min: number, max: number) =>
    typeof v === "number" && Number.isSafeInteger(v) && v >= min && v <= max;
  if (!int(replicas, 1, 1000))
    throw new ValidationError("replicaAcks.replicas must be an integer from 1 to 1000");
  // WAIT must end before the operation's own timeout, or every slow ack would look like a lost reply.
  if (!int(timeoutMs, 1, operationTimeoutMs - 1)) {
    throw new ValidationError(
      `replicaAcks.timeoutMs must be an integer from 1 to operationTimeoutMs - 1 (${operationTimeoutMs - 1})`,
    );
  }
  return { replicas: replicas as number, timeoutMs: timeoutMs as number };
}

export function needsAcks(name: ScriptName): boolean {
  return !READ_ONLY.has(name);
}

type Command = (...args: ScriptArg[]) => unknown;

/**
 * Runs one script and WAIT in one pipeline. A pipeline goes to one node over one connection, in
 * order (on a Cluster: the node of the script's key slot), so WAIT counts the replicas that got
 * this connection's writes up to and including the script. WAIT sent apart could land on another
 * connection, or on a newly promoted master after a failover, and vouch for nothing.
 */
export async function callWithAcks(
  client: Redis | Cluster,
  command: string,
  name: ScriptName,
  args: ScriptArg[],
  acks: ReplicaAcks,
): Promise<unknown> {
  for (let attempt = 1; ; attempt++) {
    const pipeline = client.pipeline();
    (pipeline as unknown as Record<string, Command>)[command]!.call(pipeline, ...args);
    (pipeline as ChainableCommander).wait(acks.replicas, acks.timeoutMs);
    const results = await pipeline.exec();
    const [scriptError, reply] = results?.[0] ?? [new Error("empty pipeline reply"), null];
    if (scriptError) {
      // A redirection: the node refused the script before running it. ioredis follows one in a
      // pipeline only when every other reply in it failed the same way, which WAIT's never does:
      // refresh the slot map and send both again (safe: the script did not run).
      if (attempt < MAX_REDIRECTIONS && isCluster(client) && NOT_RUN.test(scriptError.message)) {
        await refreshSlots(client);
        continue;
      }
      // The script's own failure is reported as without the option (refusals are replies, not errors).
      throw scriptError;
    }
    const [waitError, acked] = results?.[1] ?? [new Error("no WAIT reply"), null];
    if (waitError) {
      throw new BackendError(
        `${name}: the write was applied on the master but WAIT failed (${waitError.message}); it may be lost on failover`,
        { cause: waitError },
      );
    }
    if (typeof acked !== "number" || acked < acks.replicas) {
      throw new BackendError(
        `${name}: the write was applied on the master but only ${String(acked)} of ${acks.replicas} replica(s) acknowledged it within ${acks.timeoutMs} ms; it may be lost on failover`,
      );
    }
    return reply;
  }
}

/** Replies by which a cluster node refuses a command before running it. */
const NOT_RUN = /^(MOVED|TRYAGAIN|CLUSTERDOWN) /;
const MAX_REDIRECTIONS = 4;

function isCluster(client: Redis | Cluster): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

function refreshSlots(cluster: Cluster): Promise<void> {
  return new Promise((resolve) => {
    // A failed refresh is not this call's error: the next attempt reports what the node says.
    cluster.refreshSlotsCache(() => setTimeout(resolve, 20));
  });
}
