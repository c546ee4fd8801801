import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { RETRY, type Retry } from "@sayiir/persistence-core/adapter";
import { Chunks } from "./chunks.js";
import { type AnyCommand, type Send, sendRetrying } from "./dynamo.js";
import type { Layout } from "./layout.js";
import type { NormalizedOptions } from "./options.js";

/**
 * What every concern module (snapshots, deletion, claims, completion, discovery, control, events,
 * maintenance) works with: one per backend, built by its constructor.
 */
export interface Context {
  readonly client: DynamoDBClient;
  readonly tableName: string;
  readonly layout: Layout;
  readonly options: NormalizedOptions;
  /** Byte values: inline, or chunk items written before the item that points at them. */
  readonly chunks: Chunks;
  /** The client clock (options.clock) every claim, expiry and updatedAt is judged on. */
  now(): number;
  /** Sends one command; a write that only lost a transaction conflict is sent again (bounded). */
  send: Send;
}

export function createContext(client: DynamoDBClient, layout: Layout, options: NormalizedOptions): Context {
  const { clock, conflictRetries, tableName } = options;
  return {
    client,
    tableName,
    layout,
    options,
    chunks: new Chunks(client, tableName, layout, clock),
    now: () => clock(),
    send: <T>(command: AnyCommand | (() => AnyCommand)) => sendRetrying<T>(client, command, conflictRetries),
  };
}

/** How long a released or deleted claim's tombstone (which keeps its last token) is kept. */
const TOMBSTONE_SECONDS = 7 * 24 * 60 * 60;

/** The TTL (epoch seconds) of a tombstone or delete marker written at `now`. */
export const tombstoneTtl = (now: number): number => Math.floor(now / 1000) + TOMBSTONE_SECONDS;

/** Attempts of the optimistic loops (retryOnRace: re-read and retry after losing a race). */
export const RACE_ATTEMPTS = 50;

/**
 * For a loop whose give-up is an answer rather than an error (claimTask returns null after
 * RACE_ATTEMPTS lost races): RETRY, except on the last attempt, which returns `instead`.
 */
export function retryUnlessLast<T>(attempt: number, instead: T): T | Retry {
  return attempt + 1 < RACE_ATTEMPTS ? RETRY : instead;
}

/** Best effort: what fails is left for cleanup() (orphans never change what a reader sees). */
export async function quietly(work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch {
    // Left for cleanup().
  }
}

export const quote = (id: string): string => JSON.stringify(id);
