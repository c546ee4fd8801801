import { randomUUID } from "node:crypto";
import type {
  ConformanceOptions,
  ConformanceSubject,
  SubjectOptions,
} from "@sayiir/persistence-core/conformance";
import type { MongoDbInfo } from "@sayiir/test-servers";
import { MongoClient } from "mongodb";
import { afterAll, beforeAll, inject } from "vitest";
import type { DriverCall, FaultHooks } from "../src/context.js";
import { MongoBackend, type MongoBackendOptions } from "../src/index.js";

/** The server the tooling provides (real MongoDB or the mongo-java-server stand-in), or null. */
export const server: MongoDbInfo | null = inject("mongodb");

/** How to get a server when there is none. */
export const NO_SERVER =
  "no MongoDB server: set SAYIIR_TEST_MONGODB_URL or install the stand-in (see README)";

/** The conformance kit's targets: the one server the tooling provides, or none. */
export function conformanceTargets(): ConformanceOptions[] {
  if (server === null) return [];
  return [
    {
      name: `mongodb (${server.server} ${server.version})`,
      slowTestTimeoutMs: 120_000,
      setup: (options) => createSubject(options),
    },
  ];
}

/** What a fault hook does with one driver call; `proceed` makes the real call. */
export type DriverHook = (call: DriverCall, proceed: (args?: readonly unknown[]) => unknown) => unknown;

/**
 * The backend's testing-only fault seam (option `faults`), with a hook the test sets and clears:
 * while `hook` is null every driver call runs as is.
 */
export interface FaultSeam extends FaultHooks {
  hook: DriverHook | null;
}

/**
 * Arms `seam` to run `hook` once, right before the next commit of an instance document of
 * `collection` (the next updateOne: every update of an instance document is a compare-and-set;
 * the hook does not look at the filter, so it fires on a commit that would not compare too).
 */
export function beforeNextCommit(
  seam: FaultSeam,
  collection: string,
  hook: () => Promise<void>,
): { fired: () => boolean } {
  let armed = true;
  let fired = false;
  seam.hook = (call, proceed) => {
    if (!armed || call.collection !== collection || call.method !== "updateOne") return proceed();
    armed = false;
    return (async () => {
      await hook();
      fired = true;
      return proceed();
    })();
  };
  return { fired: () => fired };
}

export function faultSeam(): FaultSeam {
  const seam: FaultSeam = {
    hook: null,
    driverCall: (call, proceed) => (seam.hook === null ? proceed() : seam.hook(call, proceed)),
  };
  return seam;
}

/** One admin client for a whole describe block, opened before its tests and closed after them. */
export function connectForSuite(use: (client: MongoClient) => void): void {
  let client: MongoClient | undefined;
  beforeAll(async () => {
    client = new MongoClient(server?.url ?? "");
    await client.connect();
    use(client);
  });
  afterAll(async () => {
    await client?.close();
  });
}

/** The database every test of this package uses; each subject gets its own collection prefix. */
export const DATABASE = "sayiir_test";

/** A fresh collection prefix, so subjects never share data. */
export function freshPrefix(): string {
  return `t${randomUUID().replaceAll("-", "").slice(0, 16)}_`;
}

/** Drops every collection of a prefix. */
export async function dropPrefix(client: MongoClient, prefix: string): Promise<void> {
  const db = client.db(DATABASE);
  const collections = await db.listCollections({}, { nameOnly: true }).toArray();
  await Promise.all(
    collections
      .filter((c) => c.name.startsWith(prefix))
      .map((c) =>
        db
          .collection(c.name)
          .drop()
          .catch(() => undefined),
      ),
  );
}

export function requireServer(): MongoDbInfo {
  if (server === null) throw new Error("no MongoDB server was provided");
  return server;
}

/** A conformance subject over a MongoBackend, with its collection prefix. */
export interface MongoSubject extends ConformanceSubject {
  prefix: string;
  backend: MongoBackend;
  connect: () => Promise<MongoBackend>;
}

/**
 * A fresh subject: its own collection prefix; connect() opens another client over it. `extra`
 * options (e.g. `faults`) apply to the backend and to every connect()ed one.
 */
export async function createSubject(
  options: SubjectOptions = {},
  extra: Partial<MongoBackendOptions> = {},
): Promise<MongoSubject> {
  const { url } = requireServer();
  const prefix = freshPrefix();
  const open = (own: Partial<MongoBackendOptions> = {}) =>
    new MongoBackend({
      url,
      database: DATABASE,
      collectionPrefix: prefix,
      maxPayloadBytes: options.maxPayloadBytes,
      ...(options.agingMs === undefined ? {} : { agingMs: options.agingMs }),
      ...own,
      ...extra,
    });
  // The first backend goes through a fault seam (unless `extra` brings its own): the kit's
  // beforeNextWrite holds its next commit (the compare-and-set of an instance document).
  const seam = faultSeam();
  const backend = extra.faults === undefined ? open({ faults: seam }) : open();
  await backend.migrate();
  return {
    prefix,
    backend,
    connect: async () => open(),
    beforeNextWrite: (hook) => beforeNextCommit(seam, `${prefix}snapshots`, hook),
    corruptSnapshot: async (instanceId) => {
      const client = new MongoClient(url);
      try {
        await client
          .db(DATABASE)
          .collection<{ _id: string }>(`${prefix}snapshots`)
          .updateOne({ _id: instanceId }, { $set: { h: Buffer.from("not a snapshot") }, $unset: { hg: "" } });
      } finally {
        await client.close();
      }
    },
    cleanup: async () => {
      const client = new MongoClient(url);
      try {
        await dropPrefix(client, prefix);
      } finally {
        await client.close();
      }
    },
  };
}
