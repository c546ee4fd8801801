import type { PersistentBackend } from "../backend.js";

/** What the kit needs from one backend under test. */
export interface ConformanceSubject {
  /** A fresh backend over isolated storage (its own key prefix, schema, table or namespace). */
  backend: PersistentBackend;
  /**
   * Opens another client over the same storage, as a second process would. Used by the
   * concurrency group (several real clients) and, after close(), by the durability group.
   */
  connect: () => Promise<PersistentBackend>;
  /** Overwrites the stored record of a snapshot with bytes that do not decode. */
  corruptSnapshot?: (instanceId: string) => Promise<void>;
  /**
   * Holds the next write request `backend` sends (after its call judged what it read) until
   * `hook` has run, then sends it: a call in flight while another client acts. Built on the
   * store's fault seam (a driver hook, a client middleware). The cases that need it are skipped
   * without it; a store that judges inside the write itself (a script, a transaction) passes them
   * trivially and need not give it.
   */
  beforeNextWrite?: (hook: () => Promise<void>) => { fired: () => boolean };
  /** Drops the isolated storage; called after the test closed every backend it opened. */
  cleanup?: () => Promise<void>;
}

export interface SubjectOptions {
  /** When set, the backend must be configured with this maximum payload size. */
  maxPayloadBytes?: number;
  /** When set, the backend must be configured with this priority ageing (BaseBackendOptions.agingMs). */
  agingMs?: number;
}

export interface ConformanceOptions {
  /** Shown in the test names, for example "redis (standalone 7.0.15)". */
  name: string;
  /**
   * A fresh subject per test. What the backend supports is read from `backend.capabilities`
   * (durability, clock skew), and raw-record cases run when the subject gives `corruptSnapshot`.
   */
  setup: (options: SubjectOptions) => Promise<ConformanceSubject>;
  /** Per-test timeout for the size and concurrency groups on slow servers (default 60 s). */
  slowTestTimeoutMs?: number;
}

export const GROUP_NAMES = [
  "snapshots",
  "task results",
  "task-result reads",
  "claims",
  "task claims",
  "expiry",
  "fencing",
  "claim-next",
  "completion",
  "control",
  "events",
  "scheduling",
  "steps",
  "wake-ups",
  "purge",
  "discovery",
  "validation",
  "errors",
  "sizes",
  "concurrency",
  "durability",
] as const;
export type GroupName = (typeof GROUP_NAMES)[number];
