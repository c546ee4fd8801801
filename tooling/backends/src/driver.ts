// What the registry knows about one backend (one module per backend under drivers/), and the
// helpers they share. Adapting to an adapter's constructor options happens in its driver and
// nowhere else.
import { randomBytes } from "node:crypto";
import type { PersistentBackend } from "@sayiir/persistence-core";
import type { BackendName, ServerName } from "./names.ts";
import type { ClientOptions, RegistryProfile, StoreConfig, Subject } from "./types.ts";

/** Where a storage goes: an existing one (`storage`) or a fresh one named `fresh`. */
export interface Placement {
  /** The server's URL; null without a server. */
  url: string | null;
  /** An existing storage to reuse, else undefined. */
  storage: string | undefined;
  /** The name of a fresh storage ([a-z0-9_], unique). */
  fresh: string;
  profile: RegistryProfile;
}

/** What drop() may use. */
export interface DropContext {
  /** A new client straight to the server; drop() closes it. */
  open: () => PersistentBackend;
  /** The server is the run's own throw-away one. */
  throwAwayServer: boolean;
}

export interface Driver {
  /** The adapter's kind (the Redis Cluster's driver is "redis": tuning and modules go by kind). */
  name: BackendName;
  server: ServerName | null;
  /** The adapter package and its backend class. */
  specifier: string;
  className: string;
  /** The storage's description (a fresh SQLite file is created here). */
  place(placement: Placement): Promise<StoreConfig>;
  /** Constructor options of a client, before the tool's tuning. `client.via` is already resolved. */
  options(config: StoreConfig, client: ClientOptions): Record<string, unknown>;
  /**
   * The storage migrate() runs on and a key: storages with the same key share one migration per
   * process (a shared DynamoDB table). Default (or undefined): the storage itself, migrated when
   * it is created.
   */
  migration?(config: StoreConfig): { key: string; config: StoreConfig } | undefined;
  /** Overwrites the stored header of `instanceId` with bytes that do not decode. */
  corrupt?(config: StoreConfig, instanceId: string, backend: PersistentBackend): Promise<void>;
  /** Removes every record of an owned storage (its clients are closed). */
  drop(config: StoreConfig, context: DropContext): Promise<void>;
  /** A backend whose store lives in this process builds its subject itself (memory). */
  subject?(adapter: AdapterClass, client: ClientOptions): Subject;
}

/** The adapter's backend class, as the registry uses it. */
export type AdapterClass = new (options: Record<string, unknown>) => PersistentBackend;

/** A unique name of a fresh storage: `<prefix>_<tag>_<random>`, only [a-z0-9_]. */
export function freshName(prefix: string, tag: string | undefined): string {
  const name = [prefix, tag, randomBytes(6).toString("hex")].filter((p) => p !== undefined && p !== "");
  return name
    .join("_")
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, "_");
}

/** `extra` over `base`, one level deep: nested plain objects merge instead of replacing. */
export function mergeOptions(
  base: Record<string, unknown>,
  extra: Record<string, unknown> | undefined,
): Record<string, unknown> {
  if (extra === undefined) return base;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const under = out[key];
    out[key] = isPlainObject(under) && isPlainObject(value) ? { ...under, ...value } : value;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/** The options that are set (an explicit undefined does not hide a default). */
export function definedOptions<T extends object>(options: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  for (const [key, value] of Object.entries(options ?? {}))
    if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  return out;
}

/** The bytes that replace a stored header in corruption tests. */
export const CORRUPT_HEADER = new TextEncoder().encode("not a snapshot");
