// MongoDB. No MongoDB server can be installed on the machines this tooling was built on (no Debian
// package; the npm helpers download from MongoDB's own hosts at run time), so the local server is
// mongo-java-server, a wire-compatible stand-in, and it says so everywhere (server name, `standIn`).
// Real MongoDB comes from SAYIIR_TEST_MONGODB_URL or testcontainers (mongo:8), as in GitHub CI.
import { MongoClient } from "mongodb";
import type { ObtainSpec, Started } from "./acquire.ts";
import { CONTAINER_IMAGES, MONGO_JAVA_SERVER, MONGO_STAND_IN_NAME } from "./config.ts";
import { stopOnFailure } from "./container-runtime.ts";
import type { MongoDbInfo } from "./index.ts";
import { javaExecutable, javaServerStatus } from "./java.ts";
import { log, since } from "./log.ts";
import { freePort } from "./ports.ts";
import {
  deathReason,
  logTail,
  makeTempDir,
  removeTempDir,
  startProcess,
  stopProcess,
  waitForLog,
} from "./process.ts";

const HOST = "127.0.0.1";

/** `buildInfo` through the official driver. mongo-java-server answers with the version it emulates. */
export async function readMongoBuildInfo(url: string): Promise<{ version: string; standIn: boolean }> {
  const client = new MongoClient(url, { serverSelectionTimeoutMS: 5000, connectTimeoutMS: 5000 });
  try {
    await client.connect();
    const info = await client.db("admin").command({ buildInfo: 1 });
    // Real servers report their git commit; mongo-java-server does not.
    const standIn = typeof info.gitVersion !== "string" || info.gitVersion === "";
    return { version: String(info.version ?? "?"), standIn };
  } finally {
    await client.close();
  }
}

export const mongodbSpec: ObtainSpec<MongoDbInfo> = {
  kind: "mongodb",
  async fromEnv(url) {
    const b = await readMongoBuildInfo(url);
    const server = b.standIn ? "MongoDB wire-compatible stand-in (no gitVersion in buildInfo)" : "MongoDB";
    return [
      {
        info: {
          kind: "mongodb",
          url,
          server: `${server} (SAYIIR_TEST_MONGODB_URL)`,
          version: b.version,
          source: "env",
          standIn: b.standIn,
        },
        stop: async () => {},
      },
    ];
  },
  async fromContainers() {
    const { GenericContainer, Wait } = await import("testcontainers");
    const container = await new GenericContainer(CONTAINER_IMAGES.mongodb)
      .withExposedPorts(27017)
      .withWaitStrategy(Wait.forLogMessage(/Waiting for connections/))
      .start();
    const url = `mongodb://${container.getHost()}:${container.getMappedPort(27017)}/?directConnection=true`;
    const b = await stopOnFailure(container, readMongoBuildInfo(url));
    return [
      {
        info: {
          kind: "mongodb",
          url,
          server: `MongoDB (container ${CONTAINER_IMAGES.mongodb})`,
          version: b.version,
          source: "testcontainers",
          standIn: false,
        },
        stop: async () => void (await container.stop()),
      },
    ];
  },
  localPlans() {
    const status = javaServerStatus(MONGO_JAVA_SERVER);
    if ("missing" in status)
      return [{ available: false, label: "mongo-java-server", reason: status.missing }];
    return [
      {
        available: true,
        label: "mongo-java-server",
        start: () => startMongoJavaServer(status.files.classpath),
      },
    ];
  },
};

async function startMongoJavaServer(classpath: string): Promise<Started<MongoDbInfo>> {
  const started = performance.now();
  const java = javaExecutable()!;
  const dir = makeTempDir("mongodb");
  try {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const proc = startProcess({
        name: `mongo-java-server :${port}`,
        command: java,
        // Serial GC starts fastest on small machines; 2 GiB of heap holds the conformance kit's
        // 40 MiB snapshots with room to spare (it keeps everything in memory).
        args: [
          "-XX:+UseSerialGC",
          "-Xss1m",
          "-Xmx2g",
          "-cp",
          classpath,
          MONGO_JAVA_SERVER.launcherClass,
          HOST,
          String(port),
        ],
        dir,
      });
      try {
        await waitForLog(proc, /SAYIIR-READY/, 60_000);
      } catch (error) {
        lastError = error;
        await stopProcess(proc, "SIGKILL", 1000);
        if (/BindException|Address already in use/i.test(`${error}\n${logTail(proc)}`)) continue;
        throw error;
      }
      const url = `mongodb://${HOST}:${port}/`;
      const b = await readMongoBuildInfo(url).catch((error: unknown) => {
        throw new Error(`${String(error)}${deathReason(proc) ? `\n${deathReason(proc)}` : ""}`);
      });
      log(
        `mongodb: mongo-java-server on :${port} started in ${since(started)} ms (reports MongoDB ${b.version})`,
      );
      return {
        info: {
          kind: "mongodb",
          url,
          server: MONGO_STAND_IN_NAME,
          version: b.version,
          source: "local",
          standIn: true,
          control: { pid: proc.pid, pgid: proc.pid, port, dataDir: dir, logFile: proc.logFile },
        },
        stop: async () => {
          await stopProcess(proc, "SIGTERM");
          removeTempDir(dir);
        },
      };
    }
    throw lastError;
  } catch (error) {
    removeTempDir(dir);
    throw error;
  }
}
