import { createHash } from "node:crypto";
import { isClaimLive } from "@sayiir/persistence-core";
import type { WorkflowView } from "./workflow.js";

/**
 * A canonical text of a value: JSON with object keys sorted (code-unit order), byte values as
 * `{"$bytes":"<hex>"}`, undefined members left out. Two stores that hold the same workflow give
 * the same text whatever order their driver returns fields or map entries in.
 */
export function canonical(value: unknown): string {
  if (value instanceof Uint8Array) return `{"$bytes":"${Buffer.from(value).toString("hex")}"}`;
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** The digest of one workflow, in parts so a mismatch can say which part differs. */
export interface WorkflowDigest {
  snapshot: string;
  events: string;
  claims: string;
  /** sha-256 over the three parts. */
  all: string;
}

/**
 * Digests a workflow as the copy must reproduce it: the whole snapshot (state, results, attempts,
 * times); the pending events' names and payloads in order (not their sequence or send time, which
 * the target assigns); and, when claims are copied, the holders (task, worker) of the claims still
 * live at `liveAfter` (tokens and expiry times are the target's own).
 */
export function digestWorkflow(view: WorkflowView, liveAfter: number | null): WorkflowDigest {
  const snapshot = sha256(canonical(view.snapshot));
  const events = sha256(canonical(view.events.map((e) => [e.eventName, e.payload])));
  const holders =
    liveAfter === null
      ? []
      : view.claims
          .filter((c) => isClaimLive(c, liveAfter))
          .map((c) => [c.taskId, c.workerId])
          .sort(([a], [b]) => ((a as string) < (b as string) ? -1 : 1));
  const claims = sha256(canonical(holders));
  return { snapshot, events, claims, all: sha256(`${snapshot}${events}${claims}`) };
}

/** Which parts of two digests differ ("snapshot", "events", "claims"). */
export function differences(a: WorkflowDigest, b: WorkflowDigest): string[] {
  return (["snapshot", "events", "claims"] as const).filter((part) => a[part] !== b[part]);
}
