// The database servers of a run, from the test tooling (tooling/test-servers): an explicit URL from
// the same environment variables the test suites honour (SAYIIR_TEST_REDIS_URL, SAYIIR_TEST_POSTGRES_URL,
// SAYIIR_TEST_MONGODB_URL, SAYIIR_TEST_DYNAMODB_ENDPOINT), else a container when a runtime exists, else a
// local server on loopback installed once by `node tooling/test-servers/src/install.ts`.
//
// Unlike the vitest setups, one server per kind is enough here (the newest local PostgreSQL), and a
// kind that cannot be obtained is skipped with its reason instead of failing the run.
// The test tooling's modules are loaded at run time by path (the package exports only its vitest
// entry points); the few shapes used here are restated below, so this package's type check does not
// pull in the tooling's sources (their vitest type augmentation needs vitest in the program).
import { errorMessage } from "./util.ts";

export type ServerKindUsed = "redis" | "postgres" | "mongodb" | "dynamodb";

/** As in tooling/test-servers/src/index.ts. */
export interface ServerInfo {
  kind: string;
  url: string;
  server: string;
  version: string;
  source: "env" | "testcontainers" | "local";
  /** Local servers: the process (group) the tooling started. */
  control?: { pid: number; pgid: number };
}
export interface MongoDbInfo extends ServerInfo {
  standIn: boolean;
}
export interface DynamoDbInfo extends ServerInfo {
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

/** As in tooling/test-servers/src/acquire.ts. */
interface Started<T extends ServerInfo> {
  info: T;
  stop(): Promise<void>;
}
type LocalPlan<T extends ServerInfo> =
  | { available: true; label: string; start(): Promise<Started<T>> }
  | { available: false; label: string; reason: string };
interface ObtainSpec<T extends ServerInfo> {
  kind: ServerKindUsed;
  fromEnv(value: string): Promise<Array<Started<T>>>;
  fromContainers?: () => Promise<Array<Started<T>>>;
  localPlans(): Array<LocalPlan<T>>;
}

const TOOLING = new URL("../../test-servers/src/", import.meta.url);
// biome-ignore lint/suspicious/noExplicitAny: untyped on purpose, see above
const tooling = (file: string): Promise<any> => import(new URL(file, TOOLING).href);

export interface Servers {
  redis?: ServerInfo;
  postgres?: ServerInfo;
  mongodb?: MongoDbInfo;
  dynamodb?: DynamoDbInfo;
  /** Why a kind is missing. */
  unavailable: Partial<Record<ServerKindUsed, string>>;
  stop(): Promise<void>;
}

async function specOf(kind: ServerKindUsed): Promise<ObtainSpec<ServerInfo>> {
  const file = { redis: "redis.ts", postgres: "postgres.ts", mongodb: "mongodb.ts", dynamodb: "dynamodb.ts" }[
    kind
  ];
  const mod = await tooling(file);
  return mod[`${kind}Spec`] as ObtainSpec<ServerInfo>;
}

/** The major version in a plan label such as "PostgreSQL 17 (npm ...)"; 0 when there is none. */
function majorOf(label: string): number {
  const m = /(\d+)/.exec(label);
  return m ? Number(m[1]) : 0;
}

async function obtainOne<T extends ServerInfo>(spec: ObtainSpec<T>): Promise<Started<T>> {
  const { ENV_VARS, howToGet } = await tooling("index.ts");
  const { detectContainerRuntime } = await tooling("container-runtime.ts");
  const envValue = process.env[ENV_VARS[spec.kind]]?.trim();
  if (envValue) {
    const servers = await spec.fromEnv(envValue);
    const [first, ...rest] = servers;
    await Promise.allSettled(rest.map((s) => s.stop()));
    if (!first) throw new Error(`${ENV_VARS[spec.kind]} names no server`);
    return first;
  }
  if (spec.fromContainers && (await detectContainerRuntime()).available) {
    try {
      const servers = await spec.fromContainers();
      const [first, ...rest] = servers;
      await Promise.allSettled(rest.map((s) => s.stop()));
      if (first) return first;
    } catch (error) {
      process.stderr.write(
        `[bench] ${spec.kind}: containers failed (${errorMessage(error)}); trying local\n`,
      );
    }
  }
  const plans = spec.localPlans();
  const runnable = plans.filter((p): p is Extract<LocalPlan<T>, { available: true }> => p.available);
  if (runnable.length === 0) {
    const why = plans.map((p) => (p.available ? p.label : `${p.label}: ${p.reason}`)).join("; ");
    throw new Error(`no local server (${why}); ${howToGet(spec.kind)}`);
  }
  // Several PostgreSQL majors may be installed: the newest one serves the whole run.
  runnable.sort((a, b) => majorOf(b.label) - majorOf(a.label));
  return runnable[0]!.start();
}

/** Starts (or connects to) one server of each kind asked for, in parallel. Never throws. */
export async function startServers(kinds: ServerKindUsed[]): Promise<Servers> {
  const started: Array<Started<ServerInfo>> = [];
  const servers: Servers = {
    unavailable: {},
    async stop() {
      await Promise.allSettled(started.map((s) => s.stop()));
    },
  };
  await Promise.all(
    kinds.map(async (kind) => {
      const t0 = performance.now();
      try {
        const s = await obtainOne(await specOf(kind));
        started.push(s);
        (servers as unknown as Record<string, ServerInfo>)[kind] = s.info;
        process.stderr.write(
          `[bench] ${kind}: ${s.info.server} ${s.info.version} at ${redactUrl(s.info.url)} ` +
            `[${s.info.source}] in ${Math.round(performance.now() - t0)} ms\n`,
        );
      } catch (error) {
        servers.unavailable[kind] = errorMessage(error);
      }
    }),
  );
  return servers;
}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@/]*@/g, "//$1:***@");
}
