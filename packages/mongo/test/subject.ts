import { randomUUID } from "node:crypto";
import type { ConformanceSubject, SubjectOptions } from "@sayiir/persistence-core/conformance";
import type { MongoDbInfo } from "@sayiir/test-servers";
import { MongoClient } from "mongodb";
import { afterAll, beforeAll, inject } from "vitest";
import { MongoBackend } from "../src/index.js";

/** The server the tooling provides (real MongoDB or the mongo-java-server stand-in), or null. */
export const server: MongoDbInfo | null = inject("mongodb");

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

/** The conformance subject: a fresh prefix per call; connect() opens another client over it. */
export async function createSubject(
  options: SubjectOptions = {},
): Promise<ConformanceSubject & { prefix: string }> {
  const { url } = requireServer();
  const prefix = freshPrefix();
  const open = () =>
    new MongoBackend({
      url,
      database: DATABASE,
      collectionPrefix: prefix,
      maxPayloadBytes: options.maxPayloadBytes,
    });
  const backend = open();
  await backend.migrate();
  return {
    prefix,
    backend,
    connect: async () => open(),
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
