import type { PersistentBackend } from "../backend.js";

/**
 * What migrate() returns on every adapter that has a schema (tables, indexes, a DynamoDB table).
 * Migrations are numbered and forward-only; a store records the last one applied.
 */
export interface MigrationReport {
  /** Versions this call applied, in order (empty when the store was already current). */
  applied: number[];
  /** The store's schema version after the call. */
  version: number;
}

/** A backend with an explicit, idempotent migrate() (safe when many processes call it at once). */
export interface Migratable {
  migrate(): Promise<MigrationReport>;
}

/** Tells tooling whether a backend needs migrate() before its first operation. */
export function isMigratable(backend: PersistentBackend): backend is PersistentBackend & Migratable {
  return typeof (backend as Partial<Migratable>).migrate === "function";
}
