import type { BaseBackendOptions } from "@sayiir/persistence-core";
import { ValidationError } from "@sayiir/persistence-core";
import type { MongoClient, MongoClientOptions } from "mongodb";
import type { FaultHooks } from "./context.js";

/** Which clock judges claim expiry. */
export type ClockMode = "auto" | "server" | "client";

export interface MongoBackendOptions extends BaseBackendOptions {
  /** Connection string; the backend opens (and on close() closes) its own client. */
  url?: string;
  /** An existing client; close() leaves it open. Exactly one of url and client is required. */
  client?: MongoClient;
  /** Extra driver options when the backend opens its own client (timeouts are defaulted). */
  clientOptions?: MongoClientOptions;
  /** Database name (default: the database of the URL, else "sayiir"). */
  database?: string;
  /** Prefix of every collection name (default "sayiir_"), so applications can share a database. */
  collectionPrefix?: string;
  /**
   * Which clock judges claim expiry:
   * "server": the server's own clock (the localTime of a `hello`/`isMaster` reply, sampled and
   * interpolated with this process's monotonic clock); fails where the server reports none.
   * "client": this process's Date.now(); see the README for the skew this tolerates.
   * "auto" (default): "server" where the server reports its time, else "client".
   */
  clock?: ClockMode;
  /** How often the server clock is sampled again, in ms (default 10,000). */
  clockRefreshMs?: number;
  /**
   * How waitForTasks learns of other clients' writes: "auto" (default) follows a change stream
   * where the server runs one (a replica set or a sharded cluster; asked once, by migrate() or
   * the first wait), else polls; "off" always polls (e.g. where change streams are not allowed).
   */
  changeStreams?: "auto" | "off";
  /**
   * Testing only, never in production: a hook around every driver call on the backend's
   * collections, through which the adapter's tests inject failures and races (see FaultHooks).
   */
  faults?: FaultHooks;
}

export interface NormalizedOptions {
  url: string | undefined;
  client: MongoClient | undefined;
  clientOptions: MongoClientOptions;
  database: string | undefined;
  collectionPrefix: string;
  clock: ClockMode;
  clockRefreshMs: number;
  changeStreams: "auto" | "off";
  faults: FaultHooks | undefined;
}

/** Driver defaults that make a dead server fail fast (BackendError) instead of hanging. */
export const DEFAULT_CLIENT_OPTIONS: MongoClientOptions = {
  serverSelectionTimeoutMS: 5_000,
  connectTimeoutMS: 5_000,
  socketTimeoutMS: 30_000,
  maxPoolSize: 20,
};

const NAME = /^[A-Za-z0-9_-]*$/;

export function normalizeOptions(options: MongoBackendOptions): NormalizedOptions {
  if (options === null || typeof options !== "object") throw new ValidationError("options are required");
  const { url, client } = options;
  if ((url === undefined) === (client === undefined)) {
    throw new ValidationError("exactly one of `url` and `client` is required");
  }
  if (url !== undefined && (typeof url !== "string" || !/^mongodb(\+srv)?:\/\//.test(url))) {
    throw new ValidationError("url must be a mongodb:// or mongodb+srv:// connection string");
  }
  const prefix = options.collectionPrefix ?? "sayiir_";
  if (typeof prefix !== "string" || prefix.length > 64 || !NAME.test(prefix)) {
    throw new ValidationError("collectionPrefix must be at most 64 characters of A-Z, a-z, 0-9, _ and -");
  }
  const database = options.database;
  if (
    database !== undefined &&
    (typeof database !== "string" || database.length === 0 || database.length > 63 || !NAME.test(database))
  ) {
    throw new ValidationError("database must be 1 to 63 characters of A-Z, a-z, 0-9, _ and -");
  }
  const clock = options.clock ?? "auto";
  if (clock !== "auto" && clock !== "server" && clock !== "client") {
    throw new ValidationError('clock must be "auto", "server" or "client"');
  }
  const clockRefreshMs = options.clockRefreshMs ?? 10_000;
  if (!Number.isSafeInteger(clockRefreshMs) || clockRefreshMs < 1) {
    throw new ValidationError("clockRefreshMs must be a positive integer");
  }
  const changeStreams = options.changeStreams ?? "auto";
  if (changeStreams !== "auto" && changeStreams !== "off") {
    throw new ValidationError('changeStreams must be "auto" or "off"');
  }
  const faults = options.faults;
  if (faults !== undefined && typeof faults?.driverCall !== "function") {
    throw new ValidationError("faults must be an object with a driverCall function");
  }
  return {
    url,
    client,
    clientOptions: { ...DEFAULT_CLIENT_OPTIONS, ...options.clientOptions },
    database,
    collectionPrefix: prefix,
    clock,
    clockRefreshMs,
    changeStreams,
    faults,
  };
}

/** The database: the option, else the URL's path, else "sayiir". */
export function databaseName(options: NormalizedOptions): string {
  if (options.database !== undefined) return options.database;
  const match = options.url === undefined ? null : /^mongodb(?:\+srv)?:\/\/[^/]*\/([^?]+)/.exec(options.url);
  return match?.[1] ? decodeURIComponent(match[1]) : "sayiir";
}
