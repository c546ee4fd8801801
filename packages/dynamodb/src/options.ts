import type { DynamoDBClient, DynamoDBClientConfig } from "@aws-sdk/client-dynamodb";
import { type BaseBackendOptions, ValidationError } from "@sayiir/persistence-core";
import { connectionSecrets } from "@sayiir/persistence-core/adapter";

export interface DynamoDBBackendOptions extends BaseBackendOptions {
  /** Name of the single table holding every item (created by migrate()). */
  tableName: string;
  /**
   * An existing client. The backend uses it as is and close() leaves it open. When omitted,
   * the backend creates its own client from `clientConfig` and destroys it on close().
   */
  client?: DynamoDBClient;
  /** Configuration of the client the backend creates (region, endpoint, credentials, ...). */
  clientConfig?: DynamoDBClientConfig;
  /**
   * Prefix of every partition key, so several applications (or test runs) can share one table.
   * Up to 128 characters; default "" (no prefix).
   */
  keyPrefix?: string;
  /**
   * Milliseconds the clocks of any two clients may differ by. Another worker takes over an expired
   * claim only once `expiresAt + clockSkewBudgetMs` has passed on its own clock, while the holder
   * stops trusting its claim at `expiresAt` on its clock. Default 200.
   */
  clockSkewBudgetMs?: number;
  /** Milliseconds clock used for claims and updatedAt (default Date.now). */
  clock?: () => number;
  /** Number of shards of the ready-task index partition key (default 8). Fixed for a table's life. */
  readyShards?: number;
  /** Attempts of the SDK retry strategy for throttling and transient errors (default 6). */
  maxAttempts?: number;
  /** Attempts the adapter makes when a write loses a transaction conflict (default 30). */
  conflictRetries?: number;
  /** Per-request timeout of the client the backend creates, in milliseconds (default 10,000). */
  requestTimeoutMs?: number;
}

export interface NormalizedOptions {
  tableName: string;
  /** Secrets to scrub from wrapped error messages (see optionSecrets). */
  secrets: readonly string[];
  keyPrefix: string;
  skewMs: number;
  clock: () => number;
  shards: number;
  maxAttempts: number;
  conflictRetries: number;
  requestTimeoutMs: number;
}

function positiveInt(name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

export function normalizeOptions(options: DynamoDBBackendOptions): NormalizedOptions {
  if (options === null || typeof options !== "object") throw new ValidationError("options are required");
  const { tableName } = options;
  if (typeof tableName !== "string" || !/^[A-Za-z0-9_.-]{3,255}$/.test(tableName)) {
    throw new ValidationError("tableName must be 3 to 255 characters of [A-Za-z0-9_.-]");
  }
  const keyPrefix = options.keyPrefix ?? "";
  if (
    typeof keyPrefix !== "string" ||
    keyPrefix.length > 128 ||
    keyPrefix.includes("\0") ||
    !keyPrefix.isWellFormed()
  ) {
    throw new ValidationError(
      "keyPrefix must be a well-formed string of at most 128 characters without U+0000",
    );
  }
  if (options.clock !== undefined && typeof options.clock !== "function") {
    throw new ValidationError("clock must be a function returning epoch milliseconds");
  }
  return {
    tableName,
    secrets: optionSecrets(options.clientConfig),
    keyPrefix,
    skewMs: positiveInt("clockSkewBudgetMs", options.clockSkewBudgetMs, 200, 0, 3_600_000),
    clock: options.clock ?? Date.now,
    shards: positiveInt("readyShards", options.readyShards, 8, 1, 256),
    maxAttempts: positiveInt("maxAttempts", options.maxAttempts, 6, 1, 100),
    conflictRetries: positiveInt("conflictRetries", options.conflictRetries, 30, 1, 1000),
    requestTimeoutMs: positiveInt("requestTimeoutMs", options.requestTimeoutMs, 10_000, 1, 600_000),
  };
}

/**
 * Secrets of the client configuration, scrubbed from wrapped error messages: static credentials
 * (the secret access key and session token) and a password written into an endpoint URL.
 */
export function optionSecrets(clientConfig: DynamoDBClientConfig | undefined): string[] {
  const out: string[] = [];
  const credentials = clientConfig?.credentials;
  if (credentials !== null && typeof credentials === "object") {
    const { secretAccessKey, sessionToken } = credentials as {
      secretAccessKey?: unknown;
      sessionToken?: unknown;
    };
    for (const v of [secretAccessKey, sessionToken]) if (typeof v === "string" && v.length >= 4) out.push(v);
  }
  if (typeof clientConfig?.endpoint === "string") out.push(...connectionSecrets(clientConfig.endpoint));
  return out;
}

/** The client a backend creates when none is given (close() destroys it). */
export function clientConfigOf(
  o: NormalizedOptions,
  clientConfig: DynamoDBClientConfig | undefined,
): DynamoDBClientConfig {
  return {
    maxAttempts: o.maxAttempts,
    requestHandler: {
      requestTimeout: o.requestTimeoutMs,
      // Without this, @smithy/node-http-handler only logs a warning when requestTimeout passes,
      // and a request on a half-open connection waits forever.
      throwOnRequestTimeout: true,
      connectionTimeout: Math.min(5_000, o.requestTimeoutMs),
    },
    ...clientConfig,
  };
}
