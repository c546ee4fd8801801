// MongoDB: a storage is a collection prefix `<storage>_` in the profile's database.
import { CORRUPT_HEADER, type Driver } from "../driver.ts";
import { through } from "../urls.ts";

const DEFAULT_DATABASE = "sayiir";

const prefixOf = (storage: string): string => `${storage}_`;

/** A short-lived client straight to the server, on the storage's database. */
async function withDatabase<T>(
  url: string,
  database: string,
  fn: (db: import("mongodb").Db) => Promise<T>,
): Promise<T> {
  const { MongoClient } = await import("mongodb");
  const client = new MongoClient(url, { serverSelectionTimeoutMS: 5000 });
  try {
    return await fn(client.db(database));
  } finally {
    await client.close();
  }
}

export const mongo: Driver = {
  name: "mongo",
  server: "mongodb",
  specifier: "@sayiir/persistence-mongo",
  className: "MongoBackend",
  async place({ url, storage, fresh, profile }) {
    const database = profile.database ?? DEFAULT_DATABASE;
    return { backend: "mongo", url, storage: storage ?? fresh, database };
  },
  options(config, client) {
    const { timeoutMs, poolSize } = client;
    const clientOptions = {
      ...(poolSize === undefined ? {} : { maxPoolSize: poolSize }),
      ...(timeoutMs
        ? { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs, socketTimeoutMS: timeoutMs }
        : {}),
    };
    return {
      url: through(config.url!, client.via),
      database: config.database,
      collectionPrefix: prefixOf(config.storage),
      maxPayloadBytes: client.maxPayloadBytes,
      ...(Object.keys(clientOptions).length > 0 ? { clientOptions } : {}),
    };
  },
  async corrupt(config, id) {
    await withDatabase(config.url!, config.database!, async (db) => {
      // The inline header (h); hg would point at a chunked one.
      await db
        .collection<{ _id: string }>(`${prefixOf(config.storage)}snapshots`)
        .updateOne({ _id: id }, { $set: { h: Buffer.from(CORRUPT_HEADER) }, $unset: { hg: "" } });
    });
  },
  async drop(config) {
    const prefix = prefixOf(config.storage);
    await withDatabase(config.url!, config.database!, async (db) => {
      const collections = await db.listCollections({}, { nameOnly: true }).toArray();
      const mine = collections.filter((c) => c.name.startsWith(prefix));
      await Promise.all(
        mine.map((c) =>
          db
            .collection(c.name)
            .drop()
            .catch(() => undefined),
        ),
      );
    });
  },
};
