// Command-line options of `pnpm bench`.
import { parseArgs } from "node:util";
import { BACKEND_ALIASES, BACKEND_NAMES, type BackendName, backendNamed } from "@sayiir/backends";
import { PEER_NAMES, type PeerName } from "./peers.ts";

export const SCENARIOS = [
  "throughput",
  "peers",
  "discovery",
  "snapshots",
  "wakeups",
  "steps",
  "operations",
] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchOptions {
  backends: BackendName[];
  peers: PeerName[];
  scenarios: Scenario[];
  quick: boolean;
  /** Scenario 1/2: tasks (jobs) per run. */
  tasks: number;
  /** The same on the Java stand-ins (DynamoDB Local, mongo-java-server). */
  tasksStandIn: number;
  workers: number;
  processes: number;
  batch: number;
  /** Scenario 6: 4-step workflows started and run to completion. */
  workflows: number;
  /** The same on the Java stand-ins. */
  workflowsStandIn: number;
  /** Scenario 6: run the mature Sayiir engine (PyPI sayiir, from a virtualenv) beside ours on PostgreSQL. */
  pythonPeer: boolean;
  /** Scenario 3: other snapshots (non-ready, future-dated, or in another queue) at each measuring point. */
  storeSizes: number[];
  storeSizesStandIn: number[];
  storeSizesDynamo: number[];
  ready: number;
  /** Latency samples per measuring point (scenario 3) and per size (scenario 4; a quarter for 1 MiB). */
  samples: number;
  /** Scenario 5: tasks saved one at a time while the workers are idle. */
  wakeTasks: number;
  /** The same on the Java stand-ins. */
  wakeTasksStandIn: number;
  /** Scenario 5: the idle phase, seconds. */
  idleSeconds: number;
  /** Scenario 5: the producer's gap before each save, uniform in [min, max] ms. */
  wakeGapMs: [number, number];
  /** Scenario 7: unfinished workflows at each purge measuring point. */
  purgeSizes: number[];
  /** The same on the Java stand-ins. */
  purgeSizesStandIn: number[];
  /** Scenario 7: bytes of each of the four big outputs beside the 1 KiB one read. */
  bigOutputBytes: number;
  /** Upper bound of one throughput run, seconds. */
  durationS: number;
  preloadConcurrency: number;
  outDir: string;
  help: boolean;
}

export const USAGE = `pnpm bench [options]      (from the repository root; or \`pnpm start\` in tooling/bench)

  --quick                 small sizes for CI: 500 tasks, 1k/3k other snapshots, few samples
  --backends LIST         of ${BACKEND_NAMES.join(",")} (default: all; ${Object.keys(BACKEND_ALIASES).join(",")} also accepted)
  --peers LIST            of ${PEER_NAMES.join(",")}, or none (default: all)
  --scenarios LIST        of ${SCENARIOS.join(",")} (default: all)
  --tasks N               scenario 1/2: ready tasks (jobs) pre-loaded and worked off (default 20000)
  --tasks-stand-in N      the same on DynamoDB Local and mongo-java-server (default 1000)
  --workers W             concurrent workers in all (default 16)
  --processes P           worker processes the workers are spread over (default 2)
  --batch B               claimAvailableTasks limit; pg-boss batchSize (default 8)
  --workflows N           scenario 6: 4-step workflows run to completion (default 2000; --quick 125)
  --purge-sizes LIST      scenario 7: unfinished workflows at each purge point (default 1000,100000; --quick 100,1000)
  --purge-sizes-stand-in LIST   the same on DynamoDB Local and mongo-java-server (default 1000,10000)
  --workflows-stand-in N  the same on DynamoDB Local and mongo-java-server (default 250; --quick 40)
  --python-peer on|off    scenario 6: the mature Sayiir engine (PyPI sayiir 1.0.0, its own Postgres
                          backend) at 4 and 8 workers beside ours (default on; off with --quick)
  --store-sizes LIST      scenario 3: other snapshots at each point, for each shape: non-ready, tasks
                          scheduled in 2100, ready tasks in another queue (default 10000,1000000)
  --store-sizes-stand-in LIST   the same on mongo-java-server (default 10000,100000)
  --store-sizes-dynamodb LIST   the same on DynamoDB Local (default 10000,100000: it loads 1-1.5k snapshots/s here)
  --ready N               scenario 3: ready tasks present throughout (default 100)
  --samples N             latency samples per point / size (default 200; 1 MiB snapshots: a quarter)
  --wake-tasks N          scenario 5: tasks saved one at a time to idle workers (default 500; --quick 20)
  --wake-tasks-stand-in N the same on DynamoDB Local and mongo-java-server (default 200; --quick 10)
  --idle-seconds S        scenario 5: the idle phase whose requests are counted (default 30; --quick 0.5)
  --wake-gap-ms MIN,MAX   scenario 5: the producer's random gap before each save (default 5,50; --quick 5,20)
  --duration S            upper bound of one throughput run in seconds (default 600)
  --preload-concurrency N saves in flight while pre-loading (default 64)
  --out DIR               where latest.json, latest.md and latest.svg go (default tooling/bench/results;
                          with --quick tooling/bench/bench-results, which git ignores)
  -h, --help

Servers: SAYIIR_TEST_REDIS_URL, SAYIIR_TEST_POSTGRES_URL, SAYIIR_TEST_MONGODB_URL and
SAYIIR_TEST_DYNAMODB_ENDPOINT point the run at your own servers; otherwise the local servers of
tooling/test-servers are started (install them once: node tooling/test-servers/src/install.ts).`;

function list<T extends string>(value: string | undefined, all: readonly T[], what: string): T[] {
  if (value === undefined || value === "all") return [...all];
  if (value === "none" || value === "") return [];
  const items = value.split(",").map((s) => s.trim()) as T[];
  const unknown = items.filter((s) => !all.includes(s));
  if (unknown.length > 0)
    throw new Error(`unknown ${what}: ${unknown.join(", ")} (expected ${all.join(", ")})`);
  return items;
}

/** --backends: names or their aliases (mongodb for mongo), each once, in the order given. */
function backendList(value: string | undefined): BackendName[] {
  if (value === undefined || value === "all") return [...BACKEND_NAMES];
  if (value === "none" || value === "") return [];
  const items = value.split(",").map((s) => s.trim());
  const unknown = items.filter((s) => backendNamed(s) === undefined);
  if (unknown.length > 0)
    throw new Error(`unknown backend: ${unknown.join(", ")} (expected ${BACKEND_NAMES.join(", ")})`);
  return [...new Set(items.map((s) => backendNamed(s)!))];
}

function int(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value.replaceAll("_", ""));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
  return n;
}

function seconds(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number of seconds`);
  return n;
}

function sizes(value: string | undefined, fallback: number[], name: string): number[] {
  if (value === undefined) return fallback;
  const out = value.split(",").map((s) => int(s.trim(), 0, name));
  if (out.length < 2) throw new Error(`--${name} needs at least two sizes (the ratio is last/first)`);
  return out.sort((a, b) => a - b);
}

function gap(value: string | undefined, fallback: [number, number]): [number, number] {
  if (value === undefined) return fallback;
  const [min, max, ...rest] = value.split(",").map((s) => Number(s.trim()));
  if (rest.length > 0 || !(min !== undefined && max !== undefined && min >= 0 && max >= min))
    throw new Error("--wake-gap-ms must be MIN,MAX milliseconds with 0 <= MIN <= MAX");
  return [min, max];
}

function onOff(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === "on" || value === "off") return value === "on";
  throw new Error("--python-peer must be on or off");
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== "--"),
    options: {
      quick: { type: "boolean", default: false },
      backends: { type: "string" },
      peers: { type: "string" },
      scenarios: { type: "string" },
      tasks: { type: "string" },
      "tasks-stand-in": { type: "string" },
      workers: { type: "string" },
      processes: { type: "string" },
      batch: { type: "string" },
      workflows: { type: "string" },
      "workflows-stand-in": { type: "string" },
      "python-peer": { type: "string" },
      "store-sizes": { type: "string" },
      "purge-sizes": { type: "string" },
      "purge-sizes-stand-in": { type: "string" },
      "store-sizes-stand-in": { type: "string" },
      "store-sizes-dynamodb": { type: "string" },
      ready: { type: "string" },
      samples: { type: "string" },
      duration: { type: "string" },
      "wake-tasks": { type: "string" },
      "wake-tasks-stand-in": { type: "string" },
      "idle-seconds": { type: "string" },
      "wake-gap-ms": { type: "string" },
      "preload-concurrency": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  const quick = values.quick === true;
  return {
    backends: backendList(values.backends),
    peers: list(values.peers, PEER_NAMES, "peer"),
    scenarios: list(values.scenarios, SCENARIOS, "scenario"),
    quick,
    tasks: int(values.tasks, quick ? 500 : 20_000, "tasks"),
    tasksStandIn: int(values["tasks-stand-in"], quick ? 300 : 1_000, "tasks-stand-in"),
    workers: int(values.workers, 16, "workers"),
    processes: int(values.processes, 2, "processes"),
    batch: int(values.batch, 8, "batch"),
    workflows: int(values.workflows, quick ? 125 : 2_000, "workflows"),
    workflowsStandIn: int(values["workflows-stand-in"], quick ? 40 : 250, "workflows-stand-in"),
    pythonPeer: onOff(values["python-peer"], !quick),
    storeSizes: sizes(values["store-sizes"], quick ? [1_000, 3_000] : [10_000, 1_000_000], "store-sizes"),
    storeSizesStandIn: sizes(
      values["store-sizes-stand-in"],
      quick ? [1_000, 3_000] : [10_000, 100_000],
      "store-sizes-stand-in",
    ),
    storeSizesDynamo: sizes(
      values["store-sizes-dynamodb"],
      quick ? [1_000, 3_000] : [10_000, 100_000],
      "store-sizes-dynamodb",
    ),
    purgeSizes: sizes(values["purge-sizes"], quick ? [100, 1_000] : [1_000, 100_000], "purge-sizes"),
    purgeSizesStandIn: sizes(
      values["purge-sizes-stand-in"],
      quick ? [100, 1_000] : [1_000, 10_000],
      "purge-sizes-stand-in",
    ),
    bigOutputBytes: quick ? 256 * 1024 : 10 * 1024 * 1024,
    ready: int(values.ready, quick ? 20 : 100, "ready"),
    samples: int(values.samples, quick ? 20 : 200, "samples"),
    durationS: int(values.duration, 600, "duration"),
    wakeTasks: int(values["wake-tasks"], quick ? 20 : 500, "wake-tasks"),
    wakeTasksStandIn: int(values["wake-tasks-stand-in"], quick ? 10 : 200, "wake-tasks-stand-in"),
    idleSeconds: seconds(values["idle-seconds"], quick ? 0.5 : 30, "idle-seconds"),
    wakeGapMs: gap(values["wake-gap-ms"], quick ? [5, 20] : [5, 50]),
    preloadConcurrency: int(values["preload-concurrency"], 64, "preload-concurrency"),
    outDir: values.out ?? "",
    help: values.help === true,
  };
}
