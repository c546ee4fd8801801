/**
 * How the statements of sql.ts are sent: the hot ones under a name, so that each connection
 * parses (and may plan) them once; `prepareStatements: false` sends them all unnamed.
 */
import { createHash } from "node:crypto";
import type { Statements } from "./sql.js";

/**
 * A statement the backend sends. With a name, `pg` prepares it once per connection (parse and
 * plan are not redone on every call). The name carries a hash of the text, so two texts (other
 * schemas, other versions of this package) never share a name on one connection.
 */
export interface Statement {
  /** Its name in sql.ts (what the testing-only FaultHooks see). */
  key: string;
  name?: string;
  text: string;
}

/**
 * Runs of white space outside quoted identifiers and literals become one space: the server
 * copies the text of every statement it runs (pg_stat_activity, the portal), on each call.
 */
export function compact(text: string): string {
  return text
    .replace(/("(?:[^"]|"")*"|'(?:[^']|'')*')|\s+/g, (_match, quoted: string | undefined) => quoted ?? " ")
    .trim();
}

/** Postgres truncates identifiers to 63 bytes; labels stay short enough for the hash to survive. */
function prepared(key: string, sql: string, label = key): Statement {
  const text = compact(sql);
  return {
    key,
    name: `sayiir_${label}_${createHash("sha256").update(text).digest("hex").slice(0, 20)}`,
    text,
  };
}

/**
 * The statements sent under a name (prepared once per connection): those of the task cycle,
 * events and the other fixed ones. After five runs the server may keep a generic plan; for these it reads
 * by the same indexes as the custom one (test/explain.test.ts checks the task cycle's). The backend
 * sends findAvailable, like claim-next, prepared per limit (claimNextStatements); the fixed one
 * (LIMIT $1) is for limits above PREPARED_CLAIM_LIMIT. listPage stays
 * unnamed: its generic plan could not fold `$1 IS NULL` and would lose the index condition.
 * Claim-next is prepared per limit, see claimNextStatements.
 */
export const PREPARED = [
  "completeTasks",
  "claimTask",
  "releaseClaim",
  "extendClaim",
  "readClaim",
  "lockSnapshot",
  "checkFence",
  "upsertResult",
  "recordResult",
  "upsertSnapshot",
  "consumeEvent",
  "deleteEvents",
  "deleteOtherResults",
  "upsertResults",
  "loadSnapshot",
  "deleteSnapshot",
  "findAvailable",
  "sendEvent",
  "loadEvents",
  "recordFailure",
  "placeFailed",
  "lockSnapshots",
  "deleteAttempts",
  "insertAttempts",
  "stepRead",
  "stepWrite",
  "probeWakeUp",
  "purgeSelect",
  "purgeDelete",
  "loadTaskResult",
  "loadTaskClaims",
] as const satisfies ReadonlyArray<keyof Statements>;

export type PreparedKey = (typeof PREPARED)[number];

/** The other fixed statements, always sent unnamed (the rare ones: control operations, cleanup). */
export const UNNAMED = [
  "listPage",
  "deleteOrphans",
  "lockHeader",
  "hasResult",
  "storeTransition",
  "revokeClaims",
] as const satisfies ReadonlyArray<keyof Statements>;

export type FixedKey = PreparedKey | (typeof UNNAMED)[number];

/** Claim-next limits up to this one get a prepared statement of their own (a literal LIMIT). */
export const PREPARED_CLAIM_LIMIT = 64;

/**
 * Claim-next statements: for a limit up to PREPARED_CLAIM_LIMIT, one prepared with that literal
 * LIMIT (built once, then cached); above it (or unprepared), one that takes the limit as $3.
 */
export function claimNextStatements(sql: Statements, prepare: boolean) {
  const byLimit = new Map<string, Statement>();
  const byParam = new Map<number, Statement>();
  return {
    /**
     * The statement and its bind values for one call. Several queues: a statement of its own per
     * queue count (their parts merged in one statement), prepared like one queue's.
     */
    call(
      limit: number,
      workerId: string,
      ttlMs: number | null,
      queues: readonly string[],
    ): [Statement, unknown[]] {
      const n = queues.length;
      if (!prepare || limit > PREPARED_CLAIM_LIMIT) {
        let statement = byParam.get(n);
        if (statement === undefined) {
          statement = { key: "claimNext", text: sql.claimNext("$4", n) };
          byParam.set(n, statement);
        }
        return [statement, [workerId, ttlMs, queues, limit]];
      }
      let statement = byLimit.get(`${limit}:${n}`);
      if (statement === undefined) {
        const label = n === 1 ? `claimNext${limit}` : `claimNext${limit}q${n}`;
        statement = prepared("claimNext", sql.claimNext(limit, n), label);
        byLimit.set(`${limit}:${n}`, statement);
      }
      return [statement, [workerId, ttlMs, queues]];
    },
    /**
     * findAvailable and its bind values: for a limit up to PREPARED_CLAIM_LIMIT, prepared with
     * that literal LIMIT (a generic plan the server keeps, as for claim-next); above it (or
     * unprepared), the statement that takes the limit as $1.
     */
    find(limit: number, queues: readonly string[]): [Statement, unknown[]] {
      const n = queues.length;
      if (!prepare || limit > PREPARED_CLAIM_LIMIT) {
        let statement = byParam.get(-n);
        if (statement === undefined) {
          const text = sql.findAvailableFor(n);
          statement = prepare
            ? prepared("findAvailable", text, n === 1 ? "findAvailable" : `findAvailableq${n}`)
            : { key: "findAvailable", text };
          byParam.set(-n, statement);
        }
        return [statement, [limit, queues]];
      }
      let statement = byLimit.get(`find:${limit}:${n}`);
      if (statement === undefined) {
        const label = n === 1 ? `findAvailable${limit}` : `findAvailable${limit}q${n}`;
        statement = prepared("findAvailable", sql.findAvailableAt(limit, n), label);
        byLimit.set(`find:${limit}:${n}`, statement);
      }
      return [statement, [queues]];
    },
  };
}

/** The fixed statements as sent: the hot ones named when `prepare` is on, the rest plain text. */
export function preparedStatements(sql: Statements, prepare: boolean): Record<FixedKey, Statement> {
  const out = {} as Record<FixedKey, Statement>;
  for (const key of PREPARED) out[key] = prepare ? prepared(key, sql[key]) : { key, text: sql[key] };
  for (const key of UNNAMED) out[key] = { key, text: sql[key] };
  return out;
}
