// The registry's shapes: what a tool asks for (profile, create and client options), what it gets
// (a subject over an isolated storage), and the serialisable description of that storage.
import type { PersistentBackend } from "@sayiir/persistence-core";
import type { BackendName, ServerName, TargetName } from "./names.ts";
import type { ServerUrls } from "./urls.ts";

/** A network address (of the fault proxy). */
export interface Address {
  host: string;
  port: number;
}

/** Options of one client (one backend instance) over a storage. */
export interface ClientOptions {
  maxPayloadBytes?: number;
  /** Connect through this address (the fault proxy) instead of the server's own. */
  via?: Address;
  /** Ignore the subject's `via`: straight to the server (to check what a fault left behind). */
  direct?: boolean;
  /** Short driver timeouts (ms) so that faults surface quickly; default: the adapter's own. */
  timeoutMs?: number;
  /** Connections of the client's pool, where it has one (Postgres, MongoDB). */
  poolSize?: number;
}

export interface CreateOptions extends ClientOptions {
  /** Reuse this existing storage (a Subject's `storage`) instead of a fresh one; cleanup keeps it. */
  storage?: string;
  /** A word in a fresh storage's name (e.g. the bench's scenario), for whoever looks at the server. */
  tag?: string;
  /**
   * The server is this run's own throw-away one: cleanup may wipe it whole (Redis FLUSHALL)
   * instead of key by key, which is instant with millions of keys.
   */
  throwAwayServer?: boolean;
}

/** How one tool uses the registry: names, places and tuning shared by all of its clients. */
export interface RegistryProfile {
  /** Fresh storage names start with this ([a-z0-9_]; default "sayiir"). */
  prefix?: string;
  /** MongoDB database of the storages (default "sayiir"). */
  database?: string;
  /**
   * DynamoDB: one shared table, each storage a key prefix in it (creating a table is slow).
   * Default: each storage is a table of its own.
   */
  sharedTable?: string;
  /** Defaults under every client's own options. */
  client?: ClientOptions;
  /**
   * The tool's tuning: extra adapter constructor options of a client, merged over the registry's
   * (one level deep, so `clientOptions`, `poolConfig`, `clientConfig` merge rather than replace).
   */
  tune?: (name: BackendName, client: ClientOptions) => Record<string, unknown> | undefined;
  /**
   * Where each adapter module comes from (default: its package, imported on first use). The
   * worker's tests load the adapters' sources this way.
   */
  modules?: Partial<Record<BackendName, () => Promise<unknown>>>;
}

/** Serialisable description of one isolated storage: enough for another process to open it. */
export interface StoreConfig {
  backend: BackendName;
  /** The server's URL (DynamoDB: its endpoint); null for memory and SQLite. */
  url: string | null;
  /**
   * The storage: the SQLite file; the Redis key prefix; the Postgres schema; the stem of the
   * MongoDB collection prefix (`<storage>_`); the DynamoDB table, or its key prefix in `sharedTable`.
   */
  storage: string;
  /** MongoDB: the database. */
  database?: string;
  /** DynamoDB: the shared table holding this storage as a key prefix. */
  sharedTable?: string;
}

/** A storage with a first client, and what tools do with it. */
export interface Subject {
  name: BackendName;
  /** The first client (created with the create options). */
  backend: PersistentBackend;
  /** Another client (another pool / connection) over the same storage. */
  connect: (options?: ClientOptions) => Promise<PersistentBackend>;
  /** Overwrites the stored header of a snapshot with bytes that do not decode (raw, no adapter). */
  corrupt?: (instanceId: string) => Promise<void>;
  /** Identifies the storage, to reopen it (create's `storage` option) from another process. */
  storage: string;
  /** The storage, for openStore() in another process (not for memory: its store is in this one). */
  config: StoreConfig;
  /** Closes helper clients and drops an owned storage (after the caller closed its backends). */
  cleanup: () => Promise<void>;
}

/** One backend of the registry. */
export interface BackendEntry {
  name: TargetName;
  /** The server it needs (null: none). */
  server: ServerName | null;
  /** Resolves when it can run here: its server is in `urls` and its adapter loads (else BackendUnavailable). */
  available: (urls: ServerUrls) => Promise<void>;
  /** A fresh migrated storage (or `options.storage`) with a first client. */
  create: (urls: ServerUrls, options?: CreateOptions) => Promise<Subject>;
  /** A client of an existing storage (in any process). */
  open: (config: StoreConfig, options?: ClientOptions) => Promise<PersistentBackend>;
}

/** Every backend by name, and the Redis adapter on a cluster ("redis-cluster"). */
export type Registry = Readonly<Record<TargetName, BackendEntry>>;
