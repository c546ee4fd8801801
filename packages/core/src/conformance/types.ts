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
  /** Drops the isolated storage; called after the test closed every backend it opened. */
  cleanup?: () => Promise<void>;
}

export interface SubjectOptions {
  /** When set, the backend must be configured with this maximum payload size. */
  maxPayloadBytes?: number;
}

/**
 * What a backend declares it supports. The kit skips a case only from these declarations,
 * never from a list of test names.
 */
export interface BackendCapabilities {
  /** Data survives close() and a new backend instance over the same storage. */
  durable: boolean;
  /** The subject provides corruptSnapshot, so undecodable stored data can be tested. */
  rawRecords: boolean;
}

export interface ConformanceOptions {
  /** Shown in the test names, for example "redis (standalone 7.0.15)". */
  name: string;
  setup: (options: SubjectOptions) => Promise<ConformanceSubject>;
  capabilities: BackendCapabilities;
  /**
   * How far the backend's expiry judgement may lag the test's clock, in ms (default 250). A backend
   * that judges expiry on the client clock with a skew budget declares it here, and the expiry
   * cases wait that much longer before they expect a takeover.
   */
  clockSkewMs?: number;
  /** Per-test timeout for the size and concurrency groups on slow servers (default 60 s). */
  slowTestTimeoutMs?: number;
}

export const GROUP_NAMES = [
  "snapshots",
  "task results",
  "claims",
  "expiry",
  "fencing",
  "claim-next",
  "completion",
  "discovery",
  "validation",
  "errors",
  "sizes",
  "concurrency",
  "durability",
] as const;
export type GroupName = (typeof GROUP_NAMES)[number];
