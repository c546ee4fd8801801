import { BackendError, ValidationError } from "@sayiir/persistence-core";
import { KeyLayout } from "./layout.js";
import { MAX_SHARDS } from "./options.js";

/*
 * Redis has no schema: keys come into being with their first write. What a store does record is
 * its shard count, in the store record `{P:layout}` (field `shards`), written on first use, so
 * that every client of the store hashes instances to the same shards. There are no migrations
 * and no migrate(): the record is read (and, for a new store, written) by the first operation of
 * each backend, in one round trip.
 */

/** Shard count of stores written before the store record existed, when no count was given. */
export const LEGACY_DEFAULT_SHARDS = 16;

export interface StoreRecordRequest {
  /** The layout in use until the record is read: the options' shard count, or the default. */
  current: KeyLayout;
  /** The shard count given in the options, if any. */
  wanted: number | undefined;
  /** A Redis Cluster (whose default count has always been 16). */
  cluster: boolean;
}

/**
 * The storeRecord script's arguments: the record key, then ARGV. A standalone store written
 * before the record existed, without a shards option, used 16 shards: any data in shards 1..15
 * says so (with one shard it would all be in shard 0), so their id sets are probed.
 */
export function storeRecordArgs({ current, wanted, cluster }: StoreRecordRequest): string[] {
  const probes =
    wanted === undefined && !cluster && current.shards !== LEGACY_DEFAULT_SHARDS
      ? Array.from({ length: LEGACY_DEFAULT_SHARDS - 1 }, (_, i) => current.ids(i + 1))
      : [];
  return [
    current.record(),
    wanted === undefined ? "" : String(wanted),
    String(current.shards),
    String(LEGACY_DEFAULT_SHARDS),
    ...probes,
  ];
}

/**
 * The layout of the store from the script's reply: its recorded shard count. A count that is
 * not one is a BackendError; one that differs from the shards option a ValidationError (a
 * different count would strand the data).
 */
export function storeLayout(reply: unknown, { current, wanted }: StoreRecordRequest): KeyLayout {
  const quote = JSON.stringify;
  const stored = Number(reply);
  if (!Number.isSafeInteger(stored) || stored < 1 || stored > MAX_SHARDS) {
    throw new BackendError(`the layout record ${quote(current.record())} holds ${quote(String(reply))}`);
  }
  if (wanted !== undefined && stored !== wanted) {
    throw new ValidationError(
      `the store under key prefix ${quote(current.prefix)} has ${stored} shards (recorded in ` +
        `${quote(current.record())}); the shards option says ${wanted}`,
    );
  }
  return stored === current.shards ? current : new KeyLayout(current.prefix, stored);
}
