import {
  type AvailableTask,
  BackendError,
  BaseBackend,
  type ClaimedTask,
  ClaimLostError,
  ConflictError,
  decodeSnapshotHeader,
  EMPTY_BYTES,
  encodeSnapshotHeader,
  type Fence,
  NotFoundError,
  SerializationError,
  type SnapshotPage,
  type TaskClaim,
  type WorkflowSnapshot,
} from "@sayiir/persistence-core";
import { type Collection, type Db, type Document, MongoClient, MongoServerError } from "mongodb";
import { binaryBytes, deleteBlobs, newBlobId, plainCopy, readBlobs, writeBlobs } from "./chunks.js";
import { type ClaimClock, clientClock, serverClock } from "./clock.js";
import {
  type ChunkDoc,
  type ClaimDoc,
  type ClaimKey,
  type CollectionNames,
  claimKey,
  collectionNames,
  decodeCursor,
  encodeCursor,
  INLINE_HEADER_BYTES,
  type ResultRef,
  type SnapshotDoc,
} from "./layout.js";
import { migrate, probeServerClock, type ServerFeatures } from "./migrations.js";
import {
  type MongoBackendOptions,
  type NormalizedOptions,
  normalizeOptions,
  urlPassword,
} from "./options.js";

interface MetaDoc {
  _id: string;
  n?: number;
}

const quote = (value: string): string => JSON.stringify(value);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** Optimistic writers back off a little (with jitter) after losing a race. */
const backoff = (attempt: number): Promise<void> =>
  attempt < 2 ? Promise.resolve() : sleep(Math.random() * Math.min(50, 2 ** attempt));
const MAX_ATTEMPTS = 2_000;

function isDuplicateKey(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000;
}

function keyString(key: ClaimKey): string {
  return JSON.stringify([key.i, key.t]);
}

function databaseFromUrl(url: string): string | undefined {
  const match = /^mongodb(?:\+srv)?:\/\/[^/]*\/([^?]+)/.exec(url);
  return match?.[1] ? decodeURIComponent(match[1]) : undefined;
}

function toClaim(doc: ClaimDoc): TaskClaim {
  return {
    instanceId: doc._id.i,
    taskId: doc._id.t,
    workerId: doc.w as string,
    claimedAt: doc.c.getTime(),
    expiresAt: doc.e instanceof Date ? doc.e.getTime() : null,
    token: Number(doc.k),
  };
}

/** A ready candidate: the snapshot's id and its position's task. */
interface Candidate {
  instanceId: string;
  taskId: string;
}

/**
 * Sayiir persistence on MongoDB (official driver). Every claim, release, extend and commit is
 * one conditional single-document write; no multi-document transaction is needed. See the
 * package README for the collections, indexes, commit points and clock.
 */
export class MongoBackend extends BaseBackend {
  readonly #options: NormalizedOptions;
  readonly #client: MongoClient;
  readonly #ownsClient: boolean;
  readonly #db: Db;
  readonly #names: CollectionNames;
  readonly #snapshots: Collection<SnapshotDoc>;
  readonly #outputs: Collection<ChunkDoc>;
  readonly #claims: Collection<ClaimDoc>;
  readonly #meta: Collection<MetaDoc>;
  readonly #secrets: string[];
  #clock: Promise<ClaimClock> | undefined;

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
    this.#claims = this.#db.collection(this.#names.claims);
    this.#meta = this.#db.collection(this.#names.meta);
    if (this.#options.clock === "server") this.#clock = Promise.resolve(serverClock);
    if (this.#options.clock === "client") this.#clock = Promise.resolve(clientClock());
  }

  protected override secrets(): readonly string[] {
    return this.#secrets;
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
        throw new BackendError(
          'clock "server" was asked for, but this server does not evaluate $$NOW in pipeline updates',
        );
      }
      if (this.#options.clock === "auto") {
        this.#clock = Promise.resolve(features.serverClock ? serverClock : clientClock());
      }
      return features;
    });
  }

  /** Which clock judges claim expiry: "server" ($$NOW) or "client" (Date.now of this process). */
  async clockMode(): Promise<"server" | "client"> {
    return this.run("clockMode", async () => (await this.#claimClock()).mode);
  }

  #claimClock(): Promise<ClaimClock> {
    if (this.#clock === undefined) {
      const probe = probeServerClock(this.#db, this.#names).then((server) =>
        server ? serverClock : clientClock(),
      );
      this.#clock = probe;
      // A network failure is not an answer: probe again next time.
      probe.catch(() => {
        if (this.#clock === probe) this.#clock = undefined;
      });
    }
    return this.#clock;
  }

  // ---------------------------------------------------------------- claims

  /** Reserves `count` fresh fencing tokens from the global counter; returns the first. */
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

  #liveFilter(clock: ClaimClock): Document {
    return { w: { $ne: null }, $or: [{ e: null }, clock.liveTtl()] };
  }

  /**
   * Takes a claim in at most two conditional single-document writes, never a transaction:
   * 1. create it if no claim document exists (an upsert whose filter matches no stored claim,
   *    so an existing one makes the insert hit the _id index: duplicate key);
   * 2. else take it over if it is released or expired, and only with a token larger than the
   *    stored one (`$expr` with `$$NOW` is not allowed in an upsert's filter, hence two steps).
   * null: a live claim holds the task. "retry": the claim is free but our token is stale.
   */
  async #tryClaim(
    clock: ClaimClock,
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
    token: number,
  ): Promise<TaskClaim | null | "retry"> {
    const _id = claimKey(instanceId, taskId);
    const update = clock.claim(instanceId, workerId, ttlMs, token);
    let doc: ClaimDoc | null = null;
    try {
      doc = await this.#claims.findOneAndUpdate({ _id, k: { $exists: false } }, update, {
        upsert: true,
        returnDocument: "after",
      });
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
      doc = await this.#claims.findOneAndUpdate(
        { _id, k: { $lt: token }, $or: [{ w: null }, clock.expired()] },
        update,
        { returnDocument: "after" },
      );
    }
    if (doc !== null && doc.w === workerId && Number(doc.k) === token) return toClaim(doc);
    const live = await this.#claims.findOne({ _id, ...this.#liveFilter(clock) }, { projection: { _id: 1 } });
    return live === null ? "retry" : null;
  }

  protected async doClaimTask(
    instanceId: string,
    taskId: string,
    workerId: string,
    ttlMs: number | null,
  ): Promise<TaskClaim | null> {
    const clock = await this.#claimClock();
    for (let attempt = 0; attempt < 20; attempt++) {
      const token = await this.#reserveTokens(1);
      const result = await this.#tryClaim(clock, instanceId, taskId, workerId, ttlMs, token);
      if (result !== "retry") return result;
      await backoff(attempt);
    }
    return null;
  }

  protected async doReleaseTaskClaim(instanceId: string, taskId: string, workerId: string): Promise<void> {
    const _id = claimKey(instanceId, taskId);
    // The document stays (released: w = null) so that its token keeps later tokens larger.
    const result = await this.#claims.updateOne({ _id, w: workerId }, { $set: { w: null, e: null } });
    if (result.matchedCount === 1) return;
    const current = await this.#claims.findOne({ _id }, { projection: { w: 1 } });
    if (current === null || current.w === null) {
      throw new NotFoundError(`no claim on task ${quote(taskId)} of ${quote(instanceId)}`);
    }
    throw new ClaimLostError(`task ${quote(taskId)} of ${quote(instanceId)} is claimed by another worker`);
  }

  protected async doExtendTaskClaim(
    instanceId: string,
    taskId: string,
    workerId: string,
    durationMs: number,
  ): Promise<TaskClaim> {
    const clock = await this.#claimClock();
    const _id = claimKey(instanceId, taskId);
    const renewed = await this.#claims.findOneAndUpdate(
      { _id, w: workerId, ...clock.liveTtl() },
      clock.renew(durationMs),
      {
        returnDocument: "after",
      },
    );
    if (renewed !== null) return toClaim(renewed);
    const current = await this.#claims.findOne({ _id });
    if (current === null || current.w === null) {
      throw new NotFoundError(`no claim on task ${quote(taskId)} of ${quote(instanceId)}`);
    }
    if (current.w !== workerId) {
      throw new ClaimLostError(`task ${quote(taskId)} of ${quote(instanceId)} is claimed by another worker`);
    }
    // A claim without ttl stays without ttl (and never expires).
    if (current.e === null) return toClaim(current);
    throw new ClaimLostError(`the claim on task ${quote(taskId)} of ${quote(instanceId)} has expired`);
  }

  async #checkFence(instanceId: string, fence: Fence | undefined): Promise<void> {
    if (fence === undefined) return;
    const clock = await this.#claimClock();
    const live = await this.#claims.findOne(
      { _id: claimKey(instanceId, fence.taskId), k: fence.token, ...this.#liveFilter(clock) },
      { projection: { _id: 1 } },
    );
    if (live === null) {
      throw new ClaimLostError(
        `claim token ${fence.token} on task ${quote(fence.taskId)} of ${quote(instanceId)} is no longer live`,
      );
    }
  }

  // ---------------------------------------------------------------- snapshots

  protected async doSaveSnapshot(snapshot: WorkflowSnapshot, fence: Fence | undefined): Promise<void> {
    const id = snapshot.instanceId;
    const state = snapshot.state;
    const header = encodeSnapshotHeader(snapshot);
    const results = state.kind === "InProgress" ? Object.values(state.completedTasks) : [];
    const blobs = results.map((r) => ({ id: newBlobId(), bytes: r.output, taskId: r.taskId }));
    const headerBlob = header.byteLength > INLINE_HEADER_BYTES ? newBlobId() : undefined;
    const positionTask =
      state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null;
    const ready = positionTask !== null && !results.some((r) => r.taskId === positionTask);
    const fields: Omit<SnapshotDoc, "_id" | "v"> = {
      f: state.kind !== "InProgress",
      d: snapshot.definitionHash,
      p: positionTask,
      r: blobs.map((b): ResultRef => ({ t: b.taskId, g: b.id })),
      l: state.kind === "InProgress" ? state.lastCompletedTaskId : null,
      u: snapshot.updatedAt,
    };
    if (headerBlob === undefined) fields.h = header;
    else fields.hg = headerBlob;
    if (ready) {
      fields.qa = snapshot.updatedAt;
      fields.qi = id;
    }
    const unset: Record<string, ""> = {};
    if (!ready) Object.assign(unset, { qa: "", qi: "" });
    unset[headerBlob === undefined ? "hg" : "h"] = "";
    const ours = [...blobs.map((b) => b.id), ...(headerBlob === undefined ? [] : [headerBlob])];

    let written = false;
    let committed = false;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const existing = await this.#snapshots.findOne(
          { _id: id },
          { projection: { v: 1, f: 1, r: 1, hg: 1 } },
        );
        await this.#checkFence(id, fence);
        if (existing?.f === true && state.kind === "InProgress") {
          throw new ConflictError(`workflow ${quote(id)} is finished; it cannot go back to InProgress`);
        }
        if (!written) {
          // Outputs first: nothing refers to them until the snapshot document commits.
          const toWrite = blobs.map((b) => ({ id: b.id, bytes: b.bytes }));
          if (headerBlob !== undefined) toWrite.push({ id: headerBlob, bytes: header });
          await writeBlobs(this.#outputs, id, toWrite);
          written = true;
          // Writing large outputs takes time: check the fence again right before the commit.
          if (fence !== undefined) continue;
        }
        const v = newBlobId();
        if (existing === null) {
          try {
            await this.#snapshots.insertOne({ _id: id, v, ...fields });
            committed = true;
            return;
          } catch (error) {
            if (!isDuplicateKey(error)) throw error;
          }
        } else {
          const result = await this.#snapshots.updateOne(
            { _id: id, v: existing.v },
            { $set: { v, ...fields }, $unset: unset },
          );
          if (result.matchedCount === 1) {
            committed = true;
            const replaced = (existing.r ?? []).map((e) => e.g);
            if (existing.hg !== undefined) replaced.push(existing.hg);
            await deleteBlobs(this.#outputs, replaced).catch(() => undefined);
            return;
          }
        }
        await backoff(attempt);
      }
      throw new BackendError(
        `saveSnapshot: ${quote(id)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
      );
    } finally {
      if (written && !committed) await deleteBlobs(this.#outputs, ours).catch(() => undefined);
    }
  }

  protected async doSaveTaskResult(
    instanceId: string,
    taskId: string,
    output: Uint8Array,
    fence: Fence | undefined,
  ): Promise<void> {
    const blobId = newBlobId();
    let written = false;
    let committed = false;
    try {
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        const current = await this.#snapshots.findOne(
          { _id: instanceId },
          { projection: { v: 1, f: 1, p: 1, r: 1, u: 1 } },
        );
        if (current === null) throw new NotFoundError(`no snapshot for instance ${quote(instanceId)}`);
        await this.#checkFence(instanceId, fence);
        if (current.f)
          throw new ConflictError(`workflow ${quote(instanceId)} is finished; its task results are final`);
        if (!written) {
          await writeBlobs(this.#outputs, instanceId, [{ id: blobId, bytes: output }]);
          written = true;
          // Writing the output takes time: check the fence again right before the commit.
          if (fence !== undefined) continue;
        }
        const previous = (current.r ?? []).find((e) => e.t === taskId);
        const r = (current.r ?? []).filter((e) => e.t !== taskId);
        r.push({ t: taskId, g: blobId });
        const u = Math.max(current.u, Date.now());
        const ready = current.p !== null && !r.some((e) => e.t === current.p);
        const set: Partial<SnapshotDoc> = { v: newBlobId(), r, l: taskId, u };
        if (ready) {
          set.qa = u;
          set.qi = instanceId;
        }
        const update = ready
          ? { $set: set }
          : { $set: set, $unset: { qa: "", qi: "" } as Record<string, ""> };
        const result = await this.#snapshots.updateOne({ _id: instanceId, v: current.v }, update);
        if (result.matchedCount === 1) {
          committed = true;
          if (previous !== undefined) await deleteBlobs(this.#outputs, [previous.g]).catch(() => undefined);
          return;
        }
        await backoff(attempt);
      }
      throw new BackendError(
        `saveTaskResult: ${quote(instanceId)} kept changing; gave up after ${MAX_ATTEMPTS} attempts`,
      );
    } finally {
      if (written && !committed) await deleteBlobs(this.#outputs, [blobId]).catch(() => undefined);
    }
  }

  #header(doc: SnapshotDoc, blobs: Map<string, Uint8Array>): Uint8Array {
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
      const doc = await this.#snapshots.findOne({ _id: instanceId });
      if (doc === null) throw new NotFoundError(`no snapshot for instance ${quote(instanceId)}`);
      const refs = Array.isArray(doc.r) ? doc.r : [];
      const ids = refs.map((e) => e.g);
      if (doc.hg !== undefined) ids.push(doc.hg);
      const blobs = await readBlobs(this.#outputs, ids);
      if (ids.every((g) => blobs.has(g))) {
        return decodeSnapshotHeader(this.#header(doc, blobs), instanceId, {
          results: refs.map((e) => ({ taskId: e.t, output: blobs.get(e.g) as Uint8Array })),
          lastCompletedTaskId: doc.l,
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
    const doc = await this.#snapshots.findOneAndDelete({ _id: instanceId }, { projection: { r: 1, hg: 1 } });
    if (doc === null) throw new NotFoundError(`no snapshot for instance ${quote(instanceId)}`);
    await this.#claims.deleteMany({ i: instanceId });
    const blobs = (doc.r ?? []).map((e) => e.g);
    if (doc.hg !== undefined) blobs.push(doc.hg);
    await deleteBlobs(this.#outputs, blobs);
  }

  protected async doListSnapshotsPage(cursor: string | null, limit: number): Promise<SnapshotPage> {
    const filter = cursor === null ? {} : { _id: { $gt: decodeCursor(cursor) } };
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

  /** Keys of the live claims among `keys`, in one query. */
  async #liveClaims(clock: ClaimClock, keys: ClaimKey[]): Promise<Set<string>> {
    if (keys.length === 0) return new Set();
    const docs = await this.#claims
      .find({ _id: { $in: keys }, ...this.#liveFilter(clock) }, { projection: { _id: 1 } })
      .toArray();
    return new Set(docs.map((d) => keyString(d._id)));
  }

  /**
   * Walks the ready index (oldest updatedAt first, ties by instance id) page by page, skipping
   * tasks with a live claim, and hands each page of unclaimed candidates to `take` until it says stop.
   */
  async #walkReady(
    clock: ClaimClock,
    want: () => number,
    take: (page: Candidate[]) => Promise<void>,
  ): Promise<void> {
    let after: { qa: number; qi: string } | null = null;
    while (want() > 0) {
      const pageSize = Math.min(1_000, want() * 2 + 8);
      const filter: Document =
        after === null
          ? { qa: { $exists: true } }
          : {
              qa: { $exists: true },
              $or: [{ qa: { $gt: after.qa } }, { qa: after.qa, qi: { $gt: after.qi } }],
            };
      const page = await this.#snapshots
        .find(filter, { projection: { _id: 1, p: 1, qa: 1, qi: 1 } })
        .sort({ qa: 1, qi: 1 })
        .limit(pageSize)
        .toArray();
      if (page.length === 0) return;
      const candidates = page
        .filter((d) => typeof d.p === "string")
        .map((d): Candidate => ({ instanceId: d._id, taskId: d.p as string }));
      const live = await this.#liveClaims(
        clock,
        candidates.map((c) => claimKey(c.instanceId, c.taskId)),
      );
      await take(candidates.filter((c) => !live.has(keyString(claimKey(c.instanceId, c.taskId)))));
      const last = page[page.length - 1] as SnapshotDoc;
      after = { qa: last.qa as number, qi: last.qi as string };
      if (page.length < pageSize) return;
    }
  }

  /**
   * Reads the current documents of candidates and their inputs. A candidate whose snapshot
   * moved on (no longer ready at that task) or changed under us is left out.
   */
  async #withInputs(
    candidates: Candidate[],
  ): Promise<Map<string, { input: Uint8Array; definitionHash: string }>> {
    const out = new Map<string, { input: Uint8Array; definitionHash: string }>();
    if (candidates.length === 0) return out;
    const docs = await this.#snapshots.find({ _id: { $in: candidates.map((c) => c.instanceId) } }).toArray();
    const byId = new Map(docs.map((d) => [d._id, d]));
    const need: string[] = [];
    const plan: Array<{ c: Candidate; doc: SnapshotDoc; ref: string | undefined }> = [];
    for (const c of candidates) {
      const doc = byId.get(c.instanceId);
      if (doc === undefined || doc.qa === undefined || doc.p !== c.taskId) continue;
      const ref = doc.l === null ? undefined : (doc.r ?? []).find((e) => e.t === doc.l)?.g;
      if (ref !== undefined) need.push(ref);
      else if (doc.hg !== undefined) need.push(doc.hg);
      plan.push({ c, doc, ref });
    }
    const blobs = await readBlobs(this.#outputs, need);
    for (const { c, doc, ref } of plan) {
      let input: Uint8Array | undefined;
      if (ref !== undefined) {
        input = blobs.get(ref);
      } else {
        if (doc.hg !== undefined && !blobs.has(doc.hg)) continue;
        try {
          const snapshot = decodeSnapshotHeader(this.#header(doc, blobs), c.instanceId, {
            results: [],
            lastCompletedTaskId: null,
          });
          input = snapshot.initialInput ?? new Uint8Array(0);
        } catch {
          continue; // a corrupt record cannot be run; loadSnapshot reports it
        }
      }
      if (input === undefined) continue;
      out.set(c.instanceId, { input, definitionHash: doc.d });
    }
    return out;
  }

  protected async doFindAvailableTasks(_workerId: string, limit: number): Promise<AvailableTask[]> {
    const clock = await this.#claimClock();
    const found: Candidate[] = [];
    await this.#walkReady(
      clock,
      () => limit - found.length,
      async (page) => {
        found.push(...page.slice(0, limit - found.length));
      },
    );
    const inputs = await this.#withInputs(found);
    const tasks: AvailableTask[] = [];
    for (const c of found) {
      const got = inputs.get(c.instanceId);
      if (got === undefined) continue;
      tasks.push({
        instanceId: c.instanceId,
        taskId: c.taskId,
        input: got.input,
        workflowDefinitionHash: got.definitionHash,
      });
    }
    return tasks;
  }

  protected async doClaimAvailableTasks(
    workerId: string,
    limit: number,
    ttlMs: number | null,
  ): Promise<ClaimedTask[]> {
    const clock = await this.#claimClock();
    const claimed: ClaimedTask[] = [];
    await this.#walkReady(
      clock,
      () => limit - claimed.length,
      async (page) => {
        let rest = page;
        while (rest.length > 0 && claimed.length < limit) {
          // Try as many candidates as are still wanted, in parallel: at most `limit` wins.
          const batch = rest.slice(0, limit - claimed.length);
          rest = rest.slice(batch.length);
          const first = await this.#reserveTokens(batch.length);
          const won = await Promise.all(
            batch.map(async (c, i) => {
              let result = await this.#tryClaim(clock, c.instanceId, c.taskId, workerId, ttlMs, first + i);
              if (result === "retry") {
                const token = await this.#reserveTokens(1);
                result = await this.#tryClaim(clock, c.instanceId, c.taskId, workerId, ttlMs, token);
              }
              return result === null || result === "retry" ? null : { c, claim: result };
            }),
          );
          const wins = won.filter((w) => w !== null);
          const inputs = await this.#withInputs(wins.map((w) => w.c));
          for (const { c, claim } of wins) {
            const got = inputs.get(c.instanceId);
            if (got === undefined) {
              // The snapshot moved on between discovery and claim: give the claim back.
              await this.#claims
                .updateOne(
                  { _id: claimKey(c.instanceId, c.taskId), w: workerId, k: claim.token },
                  { $set: { w: null, e: null } },
                )
                .catch(() => undefined);
              continue;
            }
            claimed.push({
              instanceId: c.instanceId,
              taskId: c.taskId,
              input: got.input,
              workflowDefinitionHash: got.definitionHash,
              claim,
            });
          }
        }
      },
    );
    return claimed;
  }

  protected async doClose(): Promise<void> {
    if (this.#ownsClient) await this.#client.close();
  }
}
