/*
 * The context every operation module takes: the database, the collections (each driver call on
 * them passes the testing-only fault hook when one is set), the layout, the options, the claim
 * clock, the chunk store, and the commit point of every mutation (a compare-and-set of the
 * instance document).
 */
import { BackendError, DEFAULT_AGING_MS } from "@sayiir/persistence-core";
import type { RaceRetryOptions } from "@sayiir/persistence-core/adapter";
import type { Collection, Db, Document, MongoClient } from "mongodb";
import { ChunkStore, newBlobId } from "./chunks.js";
import { type Clock, clientClock, ServerClock } from "./clock.js";
import { type EventsChange, finishChange, nextUpdate } from "./instance.js";
import {
  type ChunkDoc,
  type CollectionNames,
  collectionNames,
  type InstanceDoc,
  type MetaDoc,
  PROJECTION,
} from "./layout.js";
import { databaseName, type NormalizedOptions } from "./options.js";
import { isDuplicateKey } from "./pending-blobs.js";
import { probeServer, readServerTime, type ServerFeatures } from "./schema.js";

/**
 * Every optimistic loop of the adapter (read, decide, compare-and-set): up to 2,000 lost races,
 * with full-jitter backoff of up to 2^n ms, capped at 50 ms.
 */
export const RACE: RaceRetryOptions = { attempts: 2_000, baseMs: 1, capMs: 50 };

export const quote = (value: string): string => JSON.stringify(value);

/** One driver call on one of the backend's collections, as the fault hook sees it. */
export interface DriverCall {
  /** The collection's full name (with the prefix). */
  collection: string;
  /** The driver method, e.g. "updateOne", "insertOne", "find", "findOneAndUpdate". */
  method: string;
  args: readonly unknown[];
}

/**
 * Testing only: the adapter's one fault-injection seam. When set (option `faults`), every driver
 * method call on the backend's collections goes through `driverCall` instead: `proceed()` makes
 * the real call (with other arguments if given) and returns what the driver returns; whatever
 * `driverCall` returns (or throws) is the call's outcome. So a test can fail a call before the
 * server, run something before it (a race), or let it land and then lose its reply.
 */
export interface FaultHooks {
  driverCall(call: DriverCall, proceed: (args?: readonly unknown[]) => unknown): unknown;
}

/** The collection with every method call routed through the fault hook. */
function withFaults<T extends Document>(collection: Collection<T>, hooks: FaultHooks): Collection<T> {
  return new Proxy(collection, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function" || typeof prop !== "string") return value;
      const method = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]) =>
        hooks.driverCall({ collection: target.collectionName, method: prop, args }, (replaced = args) =>
          method.apply(target, [...replaced]),
        );
    },
  });
}

export class MongoContext {
  readonly options: NormalizedOptions;
  readonly db: Db;
  readonly names: CollectionNames;
  readonly snapshots: Collection<InstanceDoc>;
  readonly outputs: Collection<ChunkDoc>;
  readonly meta: Collection<MetaDoc>;
  readonly chunks: ChunkStore;
  /** Priority ageing (the backend's agingMs): the ready index's effective-time key and the timers' keys. */
  readonly agingMs: number;
  /**
   * Claim-next's state shared by the concurrent calls of this backend (one process): the
   * instances a call is claiming right now (others skip them), and for instances this backend
   * claimed recently, the version its claim replaced (a page read before that claim landed still
   * shows that version: skipped, its compare-and-set could only fail), and whether claims lately
   * lost to other workers (then calls start at a random window of the page). See discovery.ts.
   */
  readonly claimNext = {
    claiming: new Set<string>(),
    superseded: new Map<string, string>(),
    /** The last batch of claims this backend sent lost some to other workers' claims. */
    contended: false,
    /** Claim-next calls in flight. */
    calls: 0,
    /** Per queue, the first page of the ready range a call is reading (joined by other calls). */
    heads: new Map<string, Promise<{ docs: InstanceDoc[]; size: number }>>(),
  };
  #clock: Promise<Clock> | undefined;
  #mode: "server" | "client" | undefined;
  #features: Promise<ServerFeatures> | undefined;

  constructor(client: MongoClient, options: NormalizedOptions, agingMs: number = DEFAULT_AGING_MS) {
    this.options = options;
    this.agingMs = agingMs;
    this.db = client.db(databaseName(options));
    this.names = collectionNames(options.collectionPrefix);
    const faults = options.faults;
    const collection = <T extends Document>(name: string): Collection<T> => {
      const raw = this.db.collection<T>(name);
      return faults === undefined ? raw : withFaults(raw, faults);
    };
    this.snapshots = collection(this.names.snapshots);
    this.outputs = collection(this.names.outputs);
    this.meta = collection(this.names.meta);
    this.chunks = new ChunkStore(this.outputs);
    if (options.clock === "client") this.#useClock(Promise.resolve(clientClock()));
  }

  // ---------------------------------------------------------------- the claim clock

  /** The clock mode once known: the option, or what the first probe found; undefined before. */
  get clockMode(): "server" | "client" | undefined {
    return this.#mode;
  }

  #useClock(clock: Promise<Clock>): Promise<Clock> {
    this.#clock = clock;
    clock.then(
      (c) => {
        if (this.#clock === clock) this.#mode = c.mode;
      },
      // A network failure is not an answer: probe again next time.
      () => {
        if (this.#clock === clock) this.#clock = undefined;
      },
    );
    return clock;
  }

  /** The clock that judges claim expiry, probed on first use (see clock.ts). */
  clock(): Promise<Clock> {
    return this.#clock ?? this.#useClock(this.#probeClock());
  }

  async #probeClock(): Promise<Clock> {
    const initial = await readServerTime(this.db);
    if (initial !== null) {
      return new ServerClock(
        async () => {
          const sample = await readServerTime(this.db);
          if (sample === null) throw new BackendError("the server stopped reporting localTime");
          return sample;
        },
        { refreshMs: this.options.clockRefreshMs, initial },
      );
    }
    if (this.options.clock === "server") throw noServerClock();
    return clientClock();
  }

  async now(): Promise<number> {
    return (await this.clock()).now();
  }

  // ---------------------------------------------------------------- server features

  /** What the server supports: what migrate() found, else probed once on first use. */
  features(): Promise<ServerFeatures> {
    if (this.#features === undefined) {
      const probe = probeServer(this.db, this.options.collectionPrefix);
      this.#features = probe;
      probe.catch(() => {
        if (this.#features === probe) this.#features = undefined;
      });
    }
    return this.#features;
  }

  /** Keeps what migrate() found. */
  knowFeatures(features: ServerFeatures): void {
    this.#features = Promise.resolve(features);
  }

  // ---------------------------------------------------------------- the instance document

  read(instanceId: string, projection: Document = PROJECTION.state): Promise<InstanceDoc | null> {
    return this.snapshots.findOne({ _id: instanceId }, { projection });
  }

  /**
   * The commit point of every mutation: one compare-and-set of the instance document against
   * the version that was read (`doc.v`). False: the document changed since (re-read and retry).
   * A new document is inserted (false on a duplicate key: someone else created it first; a new
   * document has no events, so `events` applies only to an existing one). The commit that first
   * makes a snapshot finished also stamps its finish time `fa` on this clock (see finishChange):
   * every write that can finish a workflow (saveSnapshot, a step, cancel) commits here.
   */
  async commit(
    instanceId: string,
    doc: InstanceDoc | null,
    changes: Partial<InstanceDoc>,
    remove: readonly string[] = [],
    events?: EventsChange,
  ): Promise<boolean> {
    const finish = finishChange(doc, changes);
    if (finish === "start")
      return this.#commit(instanceId, doc, { ...changes, fa: await this.now() }, remove, events);
    if (finish === "clear") return this.#commit(instanceId, doc, changes, [...remove, "fa"], events);
    return this.#commit(instanceId, doc, changes, remove, events);
  }

  async #commit(
    instanceId: string,
    doc: InstanceDoc | null,
    changes: Partial<InstanceDoc>,
    remove: readonly string[],
    events: EventsChange | undefined,
  ): Promise<boolean> {
    const version = newBlobId();
    if (doc === null) {
      const update = nextUpdate(
        instanceId,
        null,
        { c: [], ...changes },
        remove,
        version,
        undefined,
        this.agingMs,
      );
      try {
        await this.snapshots.insertOne({ _id: instanceId, ...(update.$set as Omit<InstanceDoc, "_id">) });
        return true;
      } catch (error) {
        if (isDuplicateKey(error)) return false;
        throw error;
      }
    }
    const { filter, update } = this.casUpdate(instanceId, doc, changes, remove, events);
    const result = await this.snapshots.updateOne(filter, update);
    return result.matchedCount === 1;
  }

  /**
   * The compare-and-set of an existing instance document as a filter and an update (what
   * `commit` sends), for callers that send several in one bulk write (claim-next).
   */
  casUpdate(
    instanceId: string,
    doc: InstanceDoc,
    changes: Partial<InstanceDoc>,
    remove: readonly string[] = [],
    events?: EventsChange,
  ): { filter: { _id: string; v: string }; update: ReturnType<typeof nextUpdate> } {
    const update = nextUpdate(instanceId, doc, changes, remove, newBlobId(), events, this.agingMs);
    return { filter: { _id: instanceId, v: doc.v }, update };
  }
}

export function noServerClock(): BackendError {
  return new BackendError('clock "server" was asked for, but this server reports no localTime');
}
