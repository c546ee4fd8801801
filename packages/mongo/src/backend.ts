import {
  type AvailableTask,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  type CompletionOutcome,
  decodeSnapshotHeader,
  EMPTY_BYTES,
  encodeSnapshotHeader,
  type Fence,
  failures,
  SerializationError,
  type SnapshotPage,
  type TaskClaim,
  type ValidCompletion,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { type Collection, type Db, type Document, MongoClient, MongoServerError } from "mongodb";
import {
  binaryBytes,
  deleteBlobs,
  newBlobId,
  plainCopy,
  readBlobs,
  writeBlobs,
  writeOwnedBlobs,
} from "./chunks.js";
import { type Clock, clientClock, ServerClock } from "./clock.js";
import {
  type Completing,
  claimOn,
  completionPlan,
  fenceHolds,
  isLive,
  liveClaimOn,
  nextUpdate,
  prunedClaims,
  toTaskClaim,
  withClaim,
} from "./instance.js";
import {
  type ChunkDoc,
  type ClaimEntry,
  type CollectionNames,
  collectionNames,
  decodeCursor,
  encodeCursor,
  INLINE_HEADER_BYTES,
  type InstanceDoc,
  isSnapshot,
  type ResultRef,
} from "./layout.js";
import { migrate, readServerTime, type ServerFeatures } from "./migrations.js";
import {
  type MongoBackendOptions,
  type NormalizedOptions,
  normalizeOptions,
  urlPassword,
} from "./options.js";
import { PendingBlobs } from "./pending-blobs.js";

interface MetaDoc {
  _id: string;
  n?: number;
}

const quote = (value: string): string => JSON.stringify(value);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** Optimistic writers back off a little (with jitter) after losing a race. */
const backoff = (attempt: number): Promise<void> =>
  attempt < 1 ? Promise.resolve() : sleep(Math.random() * Math.min(50, 2 ** attempt));
/** Compare-and-set attempts before giving up with a BackendError (only under extreme contention). */
const MAX_ATTEMPTS = 2_000;
/** Attempts per candidate in claim-next before moving on to the next candidate. */
const CLAIM_NEXT_ATTEMPTS = 4;

/** What a mutation reads of an instance document: everything but the inline header. */
const STATE: Document = { h: 0 };
/** What discovery reads of a ready page. */
const PAGE: Document = { _id: 1, v: 1, d: 1, f: 1, p: 1, "r.t": 1, u: 1, c: 1, qa: 1, qi: 1, qe: 1 };

function isDuplicateKey(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000;
}

function databaseFromUrl(url: string): string | undefined {
  const match = /^mongodb(?:\+srv)?:\/\/[^/]*\/([^?]+)/.exec(url);
  return match?.[1] ? decodeURIComponent(match[1]) : undefined;
}

/**
 * Sayiir persistence on MongoDB (official driver). Each instance has one document holding its
 * snapshot header, its task-result references and its claims; every claim, release, extend and
 * (fenced) write is one compare-and-set of that document, so a fence check and the write it
 * guards are atomic. No multi-document transaction is used. See the package README.
 */
export class MongoBackend extends BaseBackend {
  readonly #options: NormalizedOptions;
  readonly #client: MongoClient;
  readonly #ownsClient: boolean;
  readonly #db: Db;
  readonly #names: CollectionNames;
  readonly #snapshots: Collection<InstanceDoc>;
  readonly #outputs: Collection<ChunkDoc>;
  readonly #meta: Collection<MetaDoc>;
  readonly #secrets: string[];
  #clock: Promise<Clock> | undefined;

  constructor(options: MongoBackendOptions) {
    super(options);
    this.#options = normalizeOptions(options);
    const { url, client, clientOptions } = this.#options;
    this.#secrets = urlPassword(url);
    if (client !== undefined) {
      this.#client = client;
      this.#ownsClient = false;
    } else {
      this.#client = new MongoClient(url as string, clientOptions);
      this.#ownsClient = true;
    }
    const database =
      this.#options.database ?? (url === undefined ? undefined : databaseFromUrl(url)) ?? "sayiir";
    this.#db = this.#client.db(database);
    this.#names = collectionNames(this.#options.collectionPrefix);
    this.#snapshots = this.#db.collection(this.#names.snapshots);
    this.#outputs = this.#db.collection(this.#names.outputs);
    this.#meta = this.#db.collection(this.#names.meta);
    if (this.#options.clock === "client") this.#clock = Promise.resolve(clientClock());
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
  }

  #reconnecting: Promise<void> | undefined;
  #closing = false;

  /**
   * When the first (automatic) connect fails, the driver closes its topology for good, and every
   * later call on that client throws MongoTopologyClosedError. For a client this backend opened,
   * connect it again, so the backend recovers once the server is back. A client passed in by the
   * user is theirs to manage.
   */
  protected override async run<T>(operation: string, body: () => Promise<T>): Promise<T> {
    try {
      return await super.run(operation, body);
    } catch (error) {
      if (this.#ownsClient && !this.#closing && topologyClosed(error)) {
        this.#reconnecting ??= this.#client
          .connect()
          .then(
            () => undefined,
            () => undefined,
          )
          .finally(() => {
            this.#reconnecting = undefined;
          });
      }
      throw error;
    }
  }

  /** The database this backend uses. */
  get databaseName(): string {
    return this.#db.databaseName;
  }

  /** The collection names this backend uses. */
  get collections(): Readonly<CollectionNames> {
    return this.#names;
  }

  /**
   * Creates the indexes (idempotent; safe to run from many processes at once) and probes what
   * the server supports. Returns the features found.
   */
  async migrate(): Promise<ServerFeatures> {
    return this.run("migrate", async () => {
      const features = await migrate(this.#db, this.#names, this.#options.collectionPrefix);
      if (this.#options.clock === "server" && !features.serverClock) {
        throw new BackendError('clock "server" was asked for, but this server reports no localTime');
      }
      return features;
    });
  }

  /** Which clock judges claim expiry: "server" (the server's localTime) or "client" (Date.now). */
  async clockMode(): Promise<"server" | "client"> {
    return this.run("clockMode", async () => (await this.#claimClock()).mode);
  }

  #claimClock(): Promise<Clock> {
    if (this.#clock === undefined) {
      const refreshMs = this.#options.clockRefreshMs;
      const probe = readServerTime(this.#db).then((initial): Clock => {
        if (initial !== null) {
          return new ServerClock(
            async () => {
              const sample = await readServerTime(this.#db);
              if (sample === null) throw new BackendError("the server stopped reporting localTime");
              return sample;
            },
            { refreshMs, initial },
          );
        }
        if (this.#options.clock === "server") {
          throw new BackendError('clock "server" was asked for, but this server reports no localTime');
        }
        return clientClock();
      });
      this.#clock = probe;
      // A network failure is not an answer: probe again next time.
      probe.catch(() => {
        if (this.#clock === probe) this.#clock = undefined;
      });
    }
    return this.#clock;
  }

  async #now(): Promise<number> {
    return (await this.#claimClock()).now();
  }

  // ---------------------------------------------------------------- the instance document

  #read(instanceId: string, projection: Document = STATE): Promise<InstanceDoc | null> {
    return this.#snapshots.findOne({ _id: instanceId }, { projection });
  }

  /**
   * The commit point of every mutation: one compare-and-set of the instance document against
   * the version that was read (`doc.v`). False: the document changed since (re-read and retry).
   * A new document is inserted (false on a duplicate key: someone else created it first).
   */
  async #commit(
    instanceId: string,
    doc: InstanceDoc | null,
    changes: Partial<InstanceDoc>,
    remove: readonly string[] = [],
  ): Promise<boolean> {
    const version = newBlobId();
    if (doc === null) {
      const update = nextUpdate(instanceId, null, { c: [], ...changes }, remove, version);
      try {
        await this.#snapshots.insertOne({ _id: instanceId, ...(update.$set as Omit<InstanceDoc, "_id">) });
        return true;
      } catch (error) {
        if (isDuplicateKey(error)) return false;
        throw error;
      }
    }
    const update = nextUpdate(instanceId, doc, changes, remove, version);
    const result = await this.#snapshots.updateOne({ _id: instanceId, v: doc.v }, update);
    return result.matchedCount === 1;
  }

  // ---------------------------------------------------------------- claims

  /**
   * Reserves `count` fresh fencing tokens from the global counter; returns the first. Tokens are
   * always reserved AFTER reading the document version the claim commits against: every token
   * already committed on that instance (or on a deleted earlier incarnation of it) was reserved
   * before that read, so ours is larger; a claim committed after the read changes the version
   * and our compare-and-set fails.
   */
  async #reserveTokens(count: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        const doc = await this.#meta.findOneAndUpdate(
          { _id: "token" },
          { $inc: { n: count } },
          { upsert: true, returnDocument: "after" },
        );
        const last = Number(doc?.n);
        if (!Number.isSafeInteger(last)) throw new BackendError("the token counter holds no integer");
        return last - count + 1;
      } catch (error) {
        // Two first-ever upserts can race on the counter's _id; the loser simply retries.
        if (isDuplicateKey(error) && attempt < 5) continue;
        throw error;
      }
    }
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const doc = await this.#read(instanceId);
      const now = await this.#now();
      if (liveClaimOn(doc, taskId, now) !== undefined) return null;
      const token = await this.#reserveTokens(1);
      const entry: ClaimEntry = {
        t: taskId,
        w: workerId,
        k: token,
        c: now,
        e: ttlMs === null ? null : now + ttlMs,
      };
      if (await this.#commit(instanceId, doc, { c: withClaim(doc, taskId, entry, now) })) {
        return toTaskClaim(instanceId, entry);
      }
      await backoff(attempt);
    }
    throw new BackendError(
      `claimTask: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
    );
  }

  /** Removes a claim; a placeholder (no snapshot) left without claims is deleted. */
  async #removeClaim(instanceId: string, doc: InstanceDoc, taskId: string): Promise<boolean> {
    const claims = withClaim(doc, taskId, undefined, await this.#now());
    if (!isSnapshot(doc) && claims.length === 0) {
      const result = await this.#snapshots.deleteOne({ _id: instanceId, v: doc.v, d: { $exists: false } });
      return result.deletedCount === 1;
    }
    return this.#commit(instanceId, doc, { c: claims });
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const doc = await this.#read(instanceId);
      const claim = claimOn(doc, taskId);
      if (doc === null || claim === undefined) throw failures.claimNotFound(instanceId, taskId);
      if (claim.w !== workerId) throw failures.claimedByOther(instanceId, taskId);
      if (await this.#removeClaim(instanceId, doc, taskId)) return;
      await backoff(attempt);
    }
    throw new BackendError(
      `releaseTaskClaim: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
    );
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const doc = await this.#read(instanceId);
      const now = await this.#now();
      const claim = claimOn(doc, taskId);
      if (claim === undefined) throw failures.claimNotFound(instanceId, taskId);
      if (claim.w !== workerId) throw failures.claimedByOther(instanceId, taskId);
      if (!isLive(claim, now)) {
        throw failures.claimExpired(instanceId, taskId);
      }
      // A claim without ttl stays without ttl (and never expires).
      if (claim.e === null) return toTaskClaim(instanceId, claim);
      const renewed: ClaimEntry = { ...claim, e: now + durationMs };
      if (await this.#commit(instanceId, doc, { c: withClaim(doc, taskId, renewed, now) })) {
        return toTaskClaim(instanceId, renewed);
      }
      await backoff(attempt);
    }
    throw new BackendError(
      `extendTaskClaim: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
    );
  }

  /** Throws ClaimLostError unless the fence names the live claim of this document version. */
  async #checkFence(instanceId: string, doc: InstanceDoc | null, fence: Fence | undefined): Promise<void> {
    if (fence === undefined) return;
    if (!fenceHolds(doc, fence, await this.#now())) throw failures.fenceRejected(instanceId, fence);
  }

  // ---------------------------------------------------------------- snapshots

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const state = snapshot.state;
    const header = encodeSnapshotHeader(snapshot);
    const results = state.kind === "InProgress" ? Object.values(state.completedTasks) : [];
    const blobs = results.map((r) => ({ id: newBlobId(), bytes: r.output, taskId: r.taskId }));
    const headerBlob = header.byteLength > INLINE_HEADER_BYTES ? newBlobId() : undefined;
    const fields: Partial<InstanceDoc> = {
      d: snapshot.definitionHash,
      f: state.kind !== "InProgress",
      p: state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null,
      r: blobs.map((b): ResultRef => ({ t: b.taskId, g: b.id })),
      l: state.kind === "InProgress" ? state.lastCompletedTaskId : null,
      u: snapshot.updatedAt,
    };
    if (headerBlob === undefined) fields.h = header;
    else fields.hg = headerBlob;
    const remove = [headerBlob === undefined ? "hg" : "h"];
    const ours = [...blobs.map((b) => b.id), ...(headerBlob === undefined ? [] : [headerBlob])];

    const pending = new PendingBlobs();
    let written = false;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const doc = await this.#read(id);
        await this.#checkFence(id, doc, fence);
        if (isSnapshot(doc) && doc.f === true && state.kind === "InProgress") {
          throw failures.cannotReopen(id);
        }
        if (!written) {
          // Outputs first: nothing refers to them until the instance document commits.
          const toWrite = blobs.map((b) => ({ id: b.id, bytes: b.bytes }));
          if (headerBlob !== undefined) toWrite.push({ id: headerBlob, bytes: header });
          await writeBlobs(this.#outputs, id, toWrite);
          written = true;
          // Writing large outputs takes time: judge the fence again on a fresh read, so that the
          // claim is judged live within one round trip of the commit.
          if (fence !== undefined) continue;
        }
        // The commit carries the claims of the version read (they stay), and fails if anything
        // (a claim, a release, a take-over, another write) changed the document since.
        const c = (doc?.c ?? []).some((e) => e.e !== null) ? prunedClaims(doc, await this.#now()) : undefined;
        const changes = c === undefined ? fields : { ...fields, c };
        if (await pending.commit(ours, () => this.#commit(id, doc, changes, remove))) {
          if (isSnapshot(doc)) {
            const replaced = (doc.r ?? []).map((e) => e.g);
            if (doc.hg !== undefined) replaced.push(doc.hg);
            await deleteBlobs(this.#outputs, replaced).catch(() => undefined);
          }
          return;
        }
        await backoff(attempt);
      }
      throw new BackendError(
        `saveSnapshot: ${quote(id)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
      );
    } finally {
      // Blobs no commit refers to, or may refer to (its reply was lost), are this call's garbage.
      if (written) await deleteBlobs(this.#outputs, pending.collectable(ours)).catch(() => undefined);
    }
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const blobId = newBlobId();
    const pending = new PendingBlobs();
    let written = false;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const doc = await this.#read(instanceId);
        if (!isSnapshot(doc)) throw failures.snapshotNotFound(instanceId);
        await this.#checkFence(instanceId, doc, fence);
        if (doc.f === true) {
          throw failures.resultsFinal(instanceId);
        }
        if (!written) {
          await writeBlobs(this.#outputs, instanceId, [{ id: blobId, bytes: output }]);
          written = true;
          // Judge the fence again on a fresh read, within one round trip of the commit.
          if (fence !== undefined) continue;
        }
        const previous = (doc.r ?? []).find((e) => e.t === taskId);
        const r = (doc.r ?? []).filter((e) => e.t !== taskId);
        r.push({ t: taskId, g: blobId });
        const now = await this.#now();
        const u = Math.max(Number(doc.u ?? 0), now);
        const c = prunedClaims(doc, now);
        const changes = { r, l: taskId, u, ...(c === undefined ? {} : { c }) };
        if (await pending.commit([blobId], () => this.#commit(instanceId, doc, changes))) {
          if (previous !== undefined) await deleteBlobs(this.#outputs, [previous.g]).catch(() => undefined);
          return;
        }
        await backoff(attempt);
      }
      throw new BackendError(
        `saveTaskResult: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
      );
    } finally {
      if (written) await deleteBlobs(this.#outputs, pending.collectable([blobId])).catch(() => undefined);
    }
  }

  /**
   * completeTasks: every output goes to the outputs collection first (one insertMany for the
   * batch, while the instance documents are read with one find), then each instance commits ALL
   * its accepted completions (results in, claims out) in one compare-and-set of its document,
   * instances in parallel. The claims live in that document, so the fence checks and the write
   * they guard are one atomic step, and completions of one instance never overwrite each other.
   */
  protected override async doCompleteTasks(
    completions: readonly ValidCompletion[],
  ): Promise<CompletionOutcome[]> {
    const outcomes: CompletionOutcome[] = completions.map(() => null);
    const groups = new Map<string, Array<Completing & { index: number }>>();
    for (const [index, c] of completions.entries()) {
      const item = { taskId: c.taskId, token: c.token, blobId: newBlobId(), index };
      const group = groups.get(c.instanceId);
      if (group === undefined) groups.set(c.instanceId, [item]);
      else group.push(item);
    }
    const blobs = [...groups].flatMap(([instanceId, items]) =>
      items.map((item) => ({
        instanceId,
        id: item.blobId,
        bytes: (completions[item.index] as ValidCompletion).output,
      })),
    );
    const pending = new PendingBlobs();
    const garbage: string[] = [];
    try {
      const [read, wrote] = await Promise.allSettled([
        this.#snapshots.find({ _id: { $in: [...groups.keys()] } }, { projection: STATE }).toArray(),
        writeOwnedBlobs(this.#outputs, blobs),
      ]);
      if (wrote.status === "rejected") throw wrote.reason;
      if (read.status === "rejected") throw read.reason;
      const docs = new Map(read.value.map((doc) => [doc._id, doc]));
      const settled = await Promise.allSettled(
        [...groups].map(async ([instanceId, items]) => {
          const done = await this.#completeOn(instanceId, docs.get(instanceId) ?? null, items, pending);
          for (const [k, outcome] of done.outcomes.entries())
            outcomes[(items[k] as { index: number }).index] = outcome;
          garbage.push(...done.replaced);
        }),
      );
      const failed = settled.find((s) => s.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      return outcomes;
    } finally {
      garbage.push(...pending.collectable(blobs.map((blob) => blob.id)));
      // The commits are the commit points: failing to collect garbage changes no outcome.
      if (garbage.length > 0) await deleteBlobs(this.#outputs, garbage).catch(() => undefined);
    }
  }

  /**
   * The compare-and-set loop of one instance's completions, from the version `first` (read while
   * the outputs were written). Each attempt judges every completion at a clock reading taken
   * after the outputs are stored, so a claim is judged live within one round trip of the commit;
   * a lost compare-and-set re-reads and judges again. `pending` decides which blobs of a commit
   * that failed may be collected.
   */
  async #completeOn(
    instanceId: string,
    first: InstanceDoc | null,
    items: readonly Completing[],
    pending: PendingBlobs,
  ): Promise<{ outcomes: CompletionOutcome[]; replaced: string[] }> {
    let doc = first;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        await backoff(attempt);
        doc = await this.#read(instanceId);
      }
      const plan = completionPlan(instanceId, doc, items, await this.#now());
      if (plan.changes === undefined) return { outcomes: plan.outcomes, replaced: [] };
      const changes = plan.changes;
      const accepted = items.filter((_, k) => plan.outcomes[k] === null).map((item) => item.blobId);
      if (await pending.commit(accepted, () => this.#commit(instanceId, doc, changes))) {
        return { outcomes: plan.outcomes, replaced: plan.replaced };
      }
    }
    throw new BackendError(
      `completeTasks: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
    );
  }

  #header(doc: InstanceDoc, blobs: Map<string, Uint8Array>): Uint8Array {
    if (doc.hg !== undefined) return blobs.get(doc.hg) ?? EMPTY_BYTES;
    try {
      return plainCopy(binaryBytes(doc.h));
    } catch {
      return EMPTY_BYTES; // decodes to a SerializationError naming the instance
    }
  }

  protected async doLoadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    let previousVersion: string | undefined;
    for (let attempt = 0; attempt < 50; attempt++) {
      const doc = await this.#snapshots.findOne({ _id: instanceId }, { projection: { c: 0 } });
      if (!isSnapshot(doc)) throw failures.snapshotNotFound(instanceId);
      const refs = Array.isArray(doc.r) ? doc.r : [];
      const ids = refs.map((e) => e.g);
      if (doc.hg !== undefined) ids.push(doc.hg);
      const blobs = await readBlobs(this.#outputs, ids);
      if (ids.every((g) => blobs.has(g))) {
        return decodeSnapshotHeader(this.#header(doc, blobs), instanceId, {
          results: refs.map((e) => ({ taskId: e.t, output: blobs.get(e.g) as Uint8Array })),
          lastCompletedTaskId: doc.l ?? null,
          updatedAt: doc.u,
        });
      }
      // A writer replaced the snapshot between our two reads (and collected the old outputs):
      // read again. The same version twice with missing outputs is damage, not a race.
      if (doc.v === previousVersion) {
        throw new SerializationError(
          `snapshot ${quote(instanceId)} refers to task outputs that are not stored`,
        );
      }
      previousVersion = doc.v;
    }
    throw new BackendError(`loadSnapshot: ${quote(instanceId)} kept changing while being read`);
  }

  protected async doDeleteSnapshot(instanceId: string): Promise<void> {
    // One conditional delete: only a stored snapshot (a claims-only placeholder is "no
    // snapshot"); its claims go with the document.
    const doc = await this.#snapshots.findOneAndDelete(
      { _id: instanceId, d: { $exists: true } },
      { projection: { r: 1, hg: 1 } },
    );
    if (doc === null) throw failures.snapshotNotFound(instanceId);
    const blobs = (doc.r ?? []).map((e) => e.g);
    if (doc.hg !== undefined) blobs.push(doc.hg);
    // The delete has happened (the document was the commit point): a failure to collect the
    // blobs must not report it as failed (a retry would say NotFound). Left-over blobs belong to
    // no document; they can be swept (see the README).
    await deleteBlobs(this.#outputs, blobs).catch(() => undefined);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const filter: Document = { d: { $exists: true } };
    if (cursor !== null) filter._id = { $gt: decodeCursor(cursor) };
    const docs = await this.#snapshots
      .find(filter, { projection: { _id: 1 } })
      .sort({ _id: 1 })
      .limit(limit + 1)
      .toArray();
    const instanceIds = docs.slice(0, limit).map((d) => d._id);
    const last = instanceIds[instanceIds.length - 1];
    return { instanceIds, nextCursor: docs.length > limit && last !== undefined ? encodeCursor(last) : null };
  }

  // ---------------------------------------------------------------- discovery

  /**
   * Walks the ready index (oldest updatedAt first, ties by instance id) page by page. The index
   * holds only documents whose position's task is ready; `qe` (the expiry of a claim on that
   * task, null if unclaimed) leaves out tasks under a live claim. Each page goes to `take`
   * until `want()` reaches 0.
   */
  async #walkReady(
    now: number,
    want: () => number,
    take: (page: InstanceDoc[]) => Promise<void>,
  ): Promise<void> {
    let after: { qa: number; qi: string } | null = null;
    while (want() > 0) {
      const pageSize = Math.min(1_000, want() * 2 + 8);
      const and: Document[] = [{ $or: [{ qe: null }, { qe: { $lte: now } }] }];
      if (after !== null)
        and.push({ $or: [{ qa: { $gt: after.qa } }, { qa: after.qa, qi: { $gt: after.qi } }] });
      const page = await this.#snapshots
        .find({ qa: { $exists: true }, $and: and }, { projection: PAGE })
        .sort({ qa: 1, qi: 1 })
        .limit(pageSize)
        .toArray();
      if (page.length === 0) return;
      await take(page.filter((d) => typeof d.p === "string"));
      const last = page[page.length - 1] as InstanceDoc;
      after = { qa: last.qa as number, qi: last.qi as string };
      if (page.length < pageSize) return;
    }
  }

  /**
   * Reads the current documents of tasks and their inputs. A task whose snapshot moved on (no
   * longer at that task, completed, finished) is left out; so is one under a live claim, unless
   * `token` names that claim (claim-next reading the inputs of what it just claimed), and one
   * whose record cannot be decoded (loadSnapshot reports it). The inline header `h` is read only
   * for the tasks whose input is the initial input (no last completed task).
   */
  async #withInputs(
    items: ReadonlyArray<{ instanceId: string; taskId: string; token?: number }>,
    now: number,
  ): Promise<Map<string, { input: Uint8Array; definitionHash: string }>> {
    const out = new Map<string, { input: Uint8Array; definitionHash: string }>();
    if (items.length === 0) return out;
    const byId = new Map<string, InstanceDoc>();
    const docs = await this.#snapshots
      .find({ _id: { $in: items.map((c) => c.instanceId) } }, { projection: STATE })
      .toArray();
    for (const doc of docs) byId.set(doc._id, doc);
    const eligible = (item: (typeof items)[number]): (InstanceDoc & { d: string }) | undefined => {
      const doc = byId.get(item.instanceId);
      if (!isSnapshot(doc) || doc.f === true || doc.p !== item.taskId) return undefined;
      if ((doc.r ?? []).some((e) => e.t === item.taskId)) return undefined;
      const live = liveClaimOn(doc, item.taskId, now);
      if (item.token === undefined ? live !== undefined : claimOn(doc, item.taskId)?.k !== item.token)
        return undefined;
      return doc;
    };
    const inputRef = (doc: InstanceDoc): string | undefined =>
      doc.l === null || doc.l === undefined ? undefined : (doc.r ?? []).find((e) => e.t === doc.l)?.g;
    // Only tasks whose input is the initial input need the (inline) header: read those again in
    // full, and judge them on that newer version.
    const needHeader = items
      .filter((item) => {
        const doc = eligible(item);
        return doc !== undefined && inputRef(doc) === undefined && doc.hg === undefined;
      })
      .map((item) => item.instanceId);
    if (needHeader.length > 0) {
      for (const id of needHeader) byId.delete(id);
      const full = await this.#snapshots.find({ _id: { $in: needHeader } }).toArray();
      for (const doc of full) byId.set(doc._id, doc);
    }
    const need: string[] = [];
    const plan: Array<{ instanceId: string; doc: InstanceDoc & { d: string }; ref: string | undefined }> = [];
    for (const item of items) {
      const doc = eligible(item);
      if (doc === undefined) continue;
      const ref = inputRef(doc);
      if (ref !== undefined) need.push(ref);
      else if (doc.hg !== undefined) need.push(doc.hg);
      plan.push({ instanceId: item.instanceId, doc, ref });
    }
    const blobs = await readBlobs(this.#outputs, need);
    for (const { instanceId, doc, ref } of plan) {
      let input: Uint8Array | undefined;
      if (ref !== undefined) {
        input = blobs.get(ref);
      } else {
        if (doc.hg !== undefined && !blobs.has(doc.hg)) continue;
        try {
          const snapshot = decodeSnapshotHeader(this.#header(doc, blobs), instanceId, {
            results: [],
            lastCompletedTaskId: null,
          });
          input = snapshot.initialInput ?? new Uint8Array(0);
        } catch {
          continue; // a corrupt record cannot be run; loadSnapshot reports it
        }
      }
      if (input === undefined) continue;
      out.set(instanceId, { input, definitionHash: doc.d });
    }
    return out;
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const now = await this.#now();
    const tasks: AvailableTask[] = [];
    // A candidate whose input cannot be read (its snapshot moved on, or its record is corrupt)
    // is replaced by the next one in index order: keep walking until `limit` tasks have inputs
    // or the index is exhausted.
    await this.#walkReady(
      now,
      () => limit - tasks.length,
      async (page) => {
        let rest = page;
        while (rest.length > 0 && tasks.length < limit) {
          const batch = rest.slice(0, limit - tasks.length);
          rest = rest.slice(batch.length);
          const items = batch.map((doc) => ({ instanceId: doc._id, taskId: doc.p as string }));
          const inputs = await this.#withInputs(items, now);
          for (const c of items) {
            const got = inputs.get(c.instanceId);
            if (got === undefined) continue;
            tasks.push({
              instanceId: c.instanceId,
              taskId: c.taskId,
              input: got.input,
              workflowDefinitionHash: got.definitionHash,
            });
          }
        }
      },
    );
    return tasks;
  }

  /**
   * Claims the position's task of one ready document (as read in a page), with a token reserved
   * after that read; on a lost compare-and-set, re-reads and tries again while still ready.
   * `attempted` is told of every claim about to be committed (before the write), so that a
   * commit whose outcome is unknown (the write failed in flight) can still be given back.
   */
  async #claimCandidate(
    candidate: InstanceDoc,
    firstToken: number,
    workerId: string,
    ttlMs: number | null,
    attempted: (entry: ClaimEntry) => void,
  ): Promise<ClaimEntry | null> {
    const instanceId = candidate._id;
    const taskId = candidate.p as string;
    let doc: InstanceDoc | null = candidate;
    let token = firstToken;
    for (let attempt = 0; attempt < CLAIM_NEXT_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        await backoff(attempt);
        doc = await this.#read(instanceId, PAGE);
        token = await this.#reserveTokens(1);
      }
      const now = await this.#now();
      if (doc?.qa === undefined || doc.p !== taskId || liveClaimOn(doc, taskId, now) !== undefined)
        return null;
      const entry: ClaimEntry = {
        t: taskId,
        w: workerId,
        k: token,
        c: now,
        e: ttlMs === null ? null : now + ttlMs,
      };
      attempted(entry);
      if (await this.#commit(instanceId, doc, { c: withClaim(doc, taskId, entry, now) })) return entry;
    }
    return null;
  }

  /**
   * Gives back a claim claim-next took (or may have taken) and will not return. Matches on the
   * token, so giving back a claim that never landed, or that was taken over since, is a no-op.
   */
  async #giveBack(instanceId: string, taskId: string, token: number): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const doc = await this.#read(instanceId);
      if (doc === null || claimOn(doc, taskId)?.k !== token) return;
      if (await this.#removeClaim(instanceId, doc, taskId)) return;
      await backoff(attempt);
    }
    throw new BackendError(`could not give back the claim on ${quote(instanceId)}/${quote(taskId)}`);
  }

  /**
   * Gives back claims best-effort (a failure is retried a few times). Returns those that could
   * not be given back and never expire (no ttl): a claim with a ttl frees itself when it expires.
   */
  async #giveBackAll(
    entries: ReadonlyArray<{ instanceId: string; entry: ClaimEntry }>,
  ): Promise<{ stuck: Array<{ instanceId: string; entry: ClaimEntry }>; error: unknown }> {
    const stuck: Array<{ instanceId: string; entry: ClaimEntry }> = [];
    let error: unknown;
    await Promise.all(
      entries.map(async (claim) => {
        for (let attempt = 0; attempt < 3; attempt++) {
          try {
            await backoff(attempt * 3);
            await this.#giveBack(claim.instanceId, claim.entry.t, claim.entry.k);
            return;
          } catch (e) {
            error ??= e;
          }
        }
        if (claim.entry.e === null) stuck.push(claim);
      }),
    );
    return { stuck, error };
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    const claimed: ClaimedTask[] = [];
    // Every claim this call committed (or tried to commit, outcome unknown) and has not put in
    // `claimed`, by token. Whatever happens, each one is either returned or given back.
    const open = new Map<number, { instanceId: string; entry: ClaimEntry }>();
    const toGiveBack: Array<{ instanceId: string; entry: ClaimEntry }> = [];
    let failure: unknown;
    let failed = false;
    try {
      await this.#walkReady(
        await this.#now(),
        () => limit - claimed.length,
        async (page) => {
          let rest = page;
          while (rest.length > 0 && claimed.length < limit) {
            // Try as many candidates as are still wanted, in parallel: at most `limit` wins.
            const batch = rest.slice(0, limit - claimed.length);
            rest = rest.slice(batch.length);
            const first = await this.#reserveTokens(batch.length);
            const outcomes = await Promise.allSettled(
              batch.map((doc, i) =>
                this.#claimCandidate(doc, first + i, workerId, ttlMs, (entry) =>
                  open.set(entry.k, { instanceId: doc._id, entry }),
                ),
              ),
            );
            const wins: Array<{ instanceId: string; taskId: string; token: number; entry: ClaimEntry }> = [];
            let rejected: { reason: unknown } | undefined;
            for (const [i, outcome] of outcomes.entries()) {
              if (outcome.status === "rejected") {
                rejected ??= { reason: outcome.reason };
                continue;
              }
              const entry = outcome.value;
              if (entry === null) continue;
              wins.push({
                instanceId: (batch[i] as InstanceDoc)._id,
                taskId: entry.t,
                token: entry.k,
                entry,
              });
            }
            if (rejected === undefined) {
              // Every attempt settled: one that lost its compare-and-set holds nothing.
              const winning = new Set(wins.map((w) => w.token));
              for (const token of [...open.keys()]) if (!winning.has(token)) open.delete(token);
            }
            const inputs = await this.#withInputs(wins, await this.#now());
            for (const { instanceId, taskId, token, entry } of wins) {
              const got = inputs.get(instanceId);
              open.delete(token);
              if (got === undefined) {
                // The snapshot moved on (or its record is corrupt) between the claim and reading
                // its input: give the claim back (below, once the walk is over).
                toGiveBack.push({ instanceId, entry });
                continue;
              }
              claimed.push({
                instanceId,
                taskId,
                input: got.input,
                workflowDefinitionHash: got.definitionHash,
                claim: toTaskClaim(instanceId, entry),
              });
            }
            // The claims this batch won are in `claimed`; now report the failure of another.
            if (rejected !== undefined) throw rejected.reason;
          }
        },
      );
    } catch (error) {
      failed = true;
      failure = error;
    }
    // Claims won but not returned: given back, including those whose commit failed in flight.
    const { stuck, error: giveBackError } = await this.#giveBackAll([...toGiveBack, ...open.values()]);
    // Claims already taken are returned even if a later step failed: rejecting would lose them
    // (a claim without ttl would then block its task forever).
    if (claimed.length > 0) return claimed;
    if (stuck.length > 0) {
      const names = stuck.map((s) => `${quote(s.instanceId)}/${quote(s.entry.t)} (token ${s.entry.k})`);
      throw new BackendError(
        `claimAvailableTasks: could not give back claims without ttl held by ${quote(workerId)}: ` +
          `${names.join(", ")}; release them with releaseTaskClaim`,
        { cause: failed ? failure : giveBackError },
      );
    }
    if (failed) throw failure;
    return claimed;
  }

  protected async doClose(): Promise<void> {
    this.#closing = true;
    await this.#reconnecting;
    if (this.#ownsClient) await this.#client.close();
  }
}

/** Is this (or its cause) the driver's "topology closed" error? */
function topologyClosed(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.name === "MongoTopologyClosedError") return true;
  }
  return false;
}
