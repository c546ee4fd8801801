/*
 * The schema: the indexes (and so the collections), the schema version in the meta collection,
 * and the probes of what the connected server can do. Schema versions are numbered from 1 and
 * forward-only; version 1 is the ready index and the two blob indexes, version 2 the timer index,
 * version 3 the ready and timer indexes led by the queue (the old two are dropped, and the index
 * fields of documents written before are filled in: queue "default", priority 3), version 4 the
 * finish index (finished documents written before get their updatedAt as finish time).
 */
import { randomUUID } from "node:crypto";
import { type MigrationReport, RETRY, retryOnRace } from "@sayiir/persistence-core/adapter";
import { type Collection, type Db, type Document, MongoServerError } from "mongodb";
import type { ServerTimeSample } from "./clock.js";
import { type CollectionNames, INDEX, type InstanceDoc, META, type MetaDoc, OLD_INDEXES } from "./layout.js";
import { isDuplicateKey } from "./pending-blobs.js";

/** The schema version this release migrates to. */
export const SCHEMA_VERSION = 4;

/** What the connected server can do, found by probing it (never by its name or version). */
export interface ServerFeatures {
  /**
   * The server reports its clock (`localTime` in the `hello` / legacy `isMaster` reply), so claim
   * expiry is judged by the server's clock. MongoDB and mongo-java-server both do.
   */
  serverClock: boolean;
  /** Partial indexes leave out documents that do not match (MongoDB 3.2+); mongo-java-server indexes every document. */
  partialIndexes: boolean;
}

const CONFLICT_CODES = new Set([85, 86]); // IndexOptionsConflict, IndexKeySpecsConflict

/** Is this a command the server refused (as opposed to a network or timeout failure)? */
function refused(error: unknown): boolean {
  return error instanceof MongoServerError;
}

/**
 * Reads the server's clock: the `localTime` of a `hello` reply (MongoDB 4.4.2+), else of the
 * legacy `isMaster` (mongo-java-server knows only that one). null: the server reports no time.
 */
export async function readServerTime(db: Db): Promise<ServerTimeSample | null> {
  const admin = db.admin();
  for (const command of [{ hello: 1 }, { isMaster: 1 }]) {
    const sentAt = performance.now();
    let reply: Document;
    try {
      reply = await admin.command(command);
    } catch (error) {
      if (refused(error)) continue;
      throw error;
    }
    const receivedAt = performance.now();
    const localTime: unknown = reply.localTime;
    if (!(localTime instanceof Date) || Number.isNaN(localTime.getTime())) return null;
    return { serverMs: localTime.getTime(), sentAt, receivedAt };
  }
  return null;
}

/**
 * Probes partial indexes: a unique index over documents that have `y`, then two documents
 * without `y` but with the same `x`. MongoDB accepts both (neither is indexed); a server that
 * ignores the filter refuses the second.
 */
export async function probePartialIndexes(db: Db, prefix: string): Promise<boolean> {
  const name = `${prefix}probe_${randomUUID().replaceAll("-", "")}`;
  const probe = db.collection<{ x: number }>(name);
  try {
    await probe.createIndex({ x: 1 }, { unique: true, partialFilterExpression: { y: { $exists: true } } });
    await probe.insertOne({ x: 1 });
    await probe.insertOne({ x: 1 });
    return true;
  } catch (error) {
    if (refused(error)) return false;
    throw error;
  } finally {
    await probe.drop().catch(() => undefined);
  }
}

async function createIndex(
  db: Db,
  collection: string,
  keys: Record<string, 1>,
  options: {
    name: string;
    unique?: boolean;
    sparse?: boolean;
    partialFilterExpression?: Record<string, unknown>;
  },
): Promise<void> {
  try {
    await db.collection(collection).createIndex(keys, options);
  } catch (error) {
    // Same name, other options: created earlier by a process that saw another server
    // (or an older release). The existing index serves the same queries; keep it.
    if (error instanceof MongoServerError && CONFLICT_CODES.has(error.code as number)) return;
    throw error;
  }
}

/** Probes the server: its clock, and whether it honours partial indexes. */
export async function probeServer(db: Db, prefix: string): Promise<ServerFeatures> {
  const serverClock = (await readServerTime(db)) !== null;
  const partialIndexes = await probePartialIndexes(db, prefix);
  return { serverClock, partialIndexes };
}

/** A partial index over the documents that have `field` (MongoDB), else a sparse one (stand-ins). */
const onlyWith = (features: ServerFeatures, name: string, field: string) =>
  features.partialIndexes
    ? { name, partialFilterExpression: { [field]: { $exists: true } } }
    : { name, sparse: true };

/**
 * Creates the indexes of versions 1 to 4 (and so the collections). Idempotent and safe when many
 * processes run it at once: createIndex with identical options is a no-op.
 */
async function createIndexes(db: Db, names: CollectionNames, features: ServerFeatures): Promise<void> {
  await createIndex(db, names.outputs, { g: 1, n: 1 }, { name: INDEX.blob, unique: true });
  await createIndex(db, names.outputs, { s: 1 }, { name: INDEX.blobInstance });
  // Version 3. Ready tasks per queue, by effective time: qn/qa/qi/qe exist only while the task is
  // ready with no due time and not claimed without ttl, so both a partial index (MongoDB) and a
  // sparse one (stand-ins without partial indexes) hold exactly those documents. qe (claim
  // expiry) is the last key so that the `qe null or <= now` filter is answered from the index.
  const ready = { qn: 1, qa: 1, qi: 1, qe: 1 } as const;
  await createIndex(db, names.snapshots, ready, onlyWith(features, INDEX.ready, "qa"));
  // Tasks with a due time (runAt, timeoutAt, retryAt) per queue and priority, by due time.
  const timers = { tn: 1, tp: 1, ta: 1, ti: 1, te: 1 } as const;
  await createIndex(db, names.snapshots, timers, onlyWith(features, INDEX.timers, "ta"));
  // Version 4. Finished snapshots by finish time, then id (purgeFinished's order): `fa` exists
  // only on finished snapshots, so the partial (or sparse) index holds nothing else.
  await createIndex(db, names.snapshots, { fa: 1, _id: 1 }, onlyWith(features, INDEX.finished, "fa"));
}

/** Finished documents per round of the version 4 step. */
const FINISH_BATCH = 1_000;

/**
 * Version 4 over documents written before it: a finished snapshot without a finish time gets its
 * updatedAt (the best estimate there is; the migration's own time if it has none). One guarded
 * update per document (still finished, still without `fa`), so running it twice, or beside a
 * commit that stamps `fa` itself, changes nothing more. Not one pipeline updateMany (`$set: { fa: "$u" }`): mongo-java-server 1.47
 * refuses update pipelines.
 */
async function fillFinishTimes(db: Db, names: CollectionNames): Promise<void> {
  const snapshots = db.collection<InstanceDoc>(names.snapshots);
  const unstamped = { d: { $exists: true }, f: true, fa: { $exists: false } };
  // One pass in _id order (the _id index), each round after the last id of the one before: a
  // round that started from the beginning again would re-read every document stamped so far.
  let after: InstanceDoc["_id"] | undefined;
  for (;;) {
    const filter = after === undefined ? unstamped : { ...unstamped, _id: { $gt: after } };
    const docs = await snapshots
      .find(filter, { projection: { _id: 1, u: 1 } })
      .sort({ _id: 1 })
      .limit(FINISH_BATCH)
      .toArray();
    if (docs.length === 0) return;
    const now = Date.now();
    await snapshots.bulkWrite(
      docs.map((doc) => {
        const u = Number(doc.u);
        const fa = Number.isSafeInteger(u) && u >= 0 ? u : now;
        return { updateOne: { filter: { _id: doc._id, ...unstamped }, update: { $set: { fa } } } };
      }),
      { ordered: false },
    );
    after = docs[docs.length - 1]?._id;
  }
}

/**
 * Version 3 over documents written before it: their ready entries get the queue "default" and
 * the effective-time key (updatedAt + 2 x agingMs: priority 3), their timer entries the queue
 * and priority; then the indexes of versions 1 and 2 are dropped. Each update matches only
 * documents still without the new field, so running it twice (or beside a commit, which writes
 * every index field itself) changes nothing more.
 */
async function upgradeToQueues(db: Db, names: CollectionNames, agingMs: number): Promise<void> {
  const snapshots = db.collection(names.snapshots);
  await snapshots.updateMany(
    { qa: { $exists: true }, qn: { $exists: false } },
    { $set: { qn: "default" }, $inc: { qa: 2 * agingMs } },
  );
  await snapshots.updateMany(
    { ta: { $exists: true }, tn: { $exists: false } },
    { $set: { tn: "default", tp: 3 } },
  );
  for (const name of OLD_INDEXES) {
    try {
      await snapshots.dropIndex(name);
    } catch (error) {
      if (!refused(error)) throw error; // already gone (IndexNotFound, NamespaceNotFound)
    }
  }
}

/**
 * Records that the schema is at `version` (never lowers it) and returns the version it was at
 * before (0: none recorded). Of processes recording the same version at once, exactly one sees
 * the older one. Two first-ever upserts can race on the document's _id; the loser re-reads.
 */
async function recordVersion(meta: Collection<MetaDoc>, version: number): Promise<number> {
  return retryOnRace(
    "migrate: the schema version",
    async (attempt) => {
      try {
        const before = await meta.findOneAndUpdate(
          { _id: META.schema },
          { $max: { n: version } },
          { upsert: true, returnDocument: "before" },
        );
        return Number(before?.n ?? 0);
      } catch (error) {
        if (isDuplicateKey(error) && attempt < 5) return RETRY;
        throw error;
      }
    },
    { attempts: 6 },
  );
}

/**
 * Probes the server, creates the indexes and records the schema version. Idempotent and safe
 * when many processes run it at once (each probe uses a collection of its own). The report
 * names the versions after the one recorded before (1 to 4 on a new store, 3 and 4 on a store at
 * version 2) as applied by the one call that recorded them.
 */
export async function migrate(
  db: Db,
  names: CollectionNames,
  meta: Collection<MetaDoc>,
  prefix: string,
  agingMs: number,
): Promise<{ features: ServerFeatures; report: MigrationReport }> {
  const features = await probeServer(db, prefix);
  await createIndexes(db, names, features);
  const recorded = Number((await meta.findOne({ _id: META.schema }))?.n ?? 0);
  if (recorded < 3) await upgradeToQueues(db, names, agingMs);
  if (recorded < 4) await fillFinishTimes(db, names);
  const before = await recordVersion(meta, SCHEMA_VERSION);
  const applied: number[] = [];
  for (let version = before + 1; version <= SCHEMA_VERSION; version++) applied.push(version);
  return { features, report: { applied, version: Math.max(before, SCHEMA_VERSION) } };
}
