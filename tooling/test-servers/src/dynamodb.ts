// DynamoDB: AWS DynamoDB Local 3.x (Maven Central) run with Java 17 through our launcher, which binds
// it to 127.0.0.1 (its own command line cannot). `SAYIIR_TEST_DYNAMODB=dynalite` swaps in dynalite
// (npm, in-process, starts in milliseconds) for quick local runs; default and CI use DynamoDB Local.
import type { Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { DynamoDBClient, ListTablesCommand } from "@aws-sdk/client-dynamodb";
import type { LocalPlan, ObtainSpec, Started } from "./acquire.ts";
import { CONTAINER_IMAGES, DYNAMODB_LOCAL } from "./config.ts";
import { stopOnFailure } from "./container-runtime.ts";
import { DYNAMODB_TEST_CREDENTIALS, DYNAMODB_TEST_REGION, type DynamoDbInfo } from "./index.ts";
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
import { pollUntil } from "./wait.ts";

const HOST = "127.0.0.1";

function region(): string {
  return process.env.SAYIIR_TEST_DYNAMODB_REGION || DYNAMODB_TEST_REGION;
}

/** A successful ListTables through the official SDK: the proof that the endpoint serves DynamoDB. */
export async function listTables(endpoint: string): Promise<number> {
  const client = new DynamoDBClient({
    endpoint,
    region: region(),
    credentials: { ...DYNAMODB_TEST_CREDENTIALS },
    maxAttempts: 1,
  });
  try {
    const out = await client.send(new ListTablesCommand({}), { abortSignal: AbortSignal.timeout(5000) });
    return out.TableNames?.length ?? 0;
  } finally {
    client.destroy();
  }
}

function info(
  endpoint: string,
  server: string,
  version: string,
  source: DynamoDbInfo["source"],
): DynamoDbInfo {
  return {
    kind: "dynamodb",
    url: endpoint,
    endpoint,
    region: region(),
    credentials: { ...DYNAMODB_TEST_CREDENTIALS },
    server,
    version,
    source,
  };
}

export const dynamodbSpec: ObtainSpec<DynamoDbInfo> = {
  kind: "dynamodb",
  async fromEnv(endpoint) {
    await listTables(endpoint);
    // The endpoint cannot tell its version; ListTables answering is what we can vouch for.
    return [
      {
        info: info(
          endpoint,
          "DynamoDB-compatible endpoint (SAYIIR_TEST_DYNAMODB_ENDPOINT)",
          "unknown (ListTables ok)",
          "env",
        ),
        stop: async () => {},
      },
    ];
  },
  async fromContainers() {
    const { GenericContainer, Wait } = await import("testcontainers");
    const container = await new GenericContainer(CONTAINER_IMAGES.dynamodb)
      .withCommand(["-jar", "DynamoDBLocal.jar", "-inMemory", "-sharedDb", "-disableTelemetry"])
      .withExposedPorts(8000)
      .withWaitStrategy(Wait.forListeningPorts())
      .start();
    const endpoint = `http://${container.getHost()}:${container.getMappedPort(8000)}`;
    await stopOnFailure(
      container,
      pollUntil(() => listTables(endpoint), {
        what: `DynamoDB Local container at ${endpoint}`,
        timeoutMs: 30_000,
        intervalMs: 100,
      }),
    );
    return [
      {
        info: info(
          endpoint,
          `DynamoDB Local (container ${CONTAINER_IMAGES.dynamodb})`,
          "image tag latest (ListTables ok)",
          "testcontainers",
        ),
        stop: async () => void (await container.stop()),
      },
    ];
  },
  localPlans(): Array<LocalPlan<DynamoDbInfo>> {
    if (process.env.SAYIIR_TEST_DYNAMODB === "dynalite") {
      return [{ available: true, label: "dynalite (SAYIIR_TEST_DYNAMODB=dynalite)", start: startDynalite }];
    }
    const status = javaServerStatus(DYNAMODB_LOCAL);
    if ("missing" in status) return [{ available: false, label: "DynamoDB Local", reason: status.missing }];
    const files = status.files;
    return [
      {
        available: true,
        label: `DynamoDB Local ${DYNAMODB_LOCAL.version}`,
        start: () => startDynamoDbLocal(files.classpath, files.nativeDir),
      },
    ];
  },
};

async function startDynamoDbLocal(classpath: string, nativeDir: string): Promise<Started<DynamoDbInfo>> {
  const started = performance.now();
  const java = javaExecutable()!;
  const dir = makeTempDir("dynamodb");
  try {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const proc = startProcess({
        name: `DynamoDB Local :${port}`,
        command: java,
        args: [
          `-Djava.library.path=${nativeDir}`,
          "-XX:+UseSerialGC",
          "-Xmx2g",
          "-cp",
          classpath,
          DYNAMODB_LOCAL.launcherClass,
          HOST,
          String(port),
        ],
        dir,
      });
      const endpoint = `http://${HOST}:${port}`;
      try {
        await waitForLog(proc, /SAYIIR-READY/, 60_000);
        await pollUntil(() => listTables(endpoint), {
          what: `DynamoDB Local at ${endpoint} to answer ListTables`,
          timeoutMs: 30_000,
          intervalMs: 50,
          abortIf: () => deathReason(proc),
        });
      } catch (error) {
        lastError = error;
        await stopProcess(proc, "SIGKILL", 1000);
        if (/BindException|Address already in use|Failed to bind/i.test(`${error}\n${logTail(proc)}`))
          continue;
        throw error;
      }
      log(`dynamodb: DynamoDB Local ${DYNAMODB_LOCAL.version} on :${port} started in ${since(started)} ms`);
      return {
        info: {
          ...info(
            endpoint,
            `DynamoDB Local (Maven software.amazon.dynamodb:DynamoDBLocal:${DYNAMODB_LOCAL.version})`,
            `${DYNAMODB_LOCAL.version} (ListTables ok)`,
            "local",
          ),
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

type DynaliteFactory = (options: {
  createTableMs: number;
  deleteTableMs: number;
  updateTableMs: number;
}) => Server;

async function startDynalite(): Promise<Started<DynamoDbInfo>> {
  const started = performance.now();
  // dynalite ships no types, and is only loaded on request: load it through require.
  const require = createRequire(import.meta.url);
  const dynalite = require("dynalite") as DynaliteFactory;
  const version = (require("dynalite/package.json") as { version: string }).version;
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://${HOST}:${port}`;
  await listTables(endpoint);
  log(`dynamodb: dynalite ${version} in-process on :${port} started in ${since(started)} ms`);
  return {
    info: info(
      endpoint,
      "dynalite (npm, in-process DynamoDB emulation; not DynamoDB Local)",
      `${version} (ListTables ok)`,
      "local",
    ),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
