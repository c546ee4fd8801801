// `./dev serve <kind>`: starts ONE throw-away local server of that kind on 127.0.0.1 (as the test
// suites do), prints its URL, and keeps it up until Ctrl-C, then stops it and removes its data.
// For trying the CLI and the demo against a real database without installing one yourself.
import type { ObtainSpec } from "./acquire.ts";
import { dynamodbSpec } from "./dynamodb.ts";
import type { RedisClusterInfo, ServerInfo, ServerKind } from "./index.ts";
import { mongodbSpec } from "./mongodb.ts";
import { postgresSpec } from "./postgres.ts";
import { redisClusterSpec, redisSpec } from "./redis.ts";

const SPECS: Partial<Record<ServerKind, ObtainSpec<ServerInfo>>> = {
  postgres: postgresSpec,
  redis: redisSpec,
  "redis-cluster": redisClusterSpec,
  mongodb: mongodbSpec,
  dynamodb: dynamodbSpec,
};

const kind = process.argv[2] as ServerKind | undefined;
const spec = kind === undefined ? undefined : SPECS[kind];
if (spec === undefined) {
  console.error(`usage: ./dev serve <${Object.keys(SPECS).join(" | ")}>`);
  process.exit(2);
}
const plan = spec.localPlans().find((p) => p.available);
if (plan === undefined || !plan.available) {
  console.error(`no local ${kind} server is installed: run ./dev servers ${kind}`);
  process.exit(1);
}
const server = await plan.start();
// The URL carries the fixed password of this throw-away test server (tooling/test-servers/src/config.ts).
console.log(`${server.info.server} ${server.info.version} is up (data removed when it stops):`);
const nodes = (server.info as Partial<RedisClusterInfo>).nodes?.map((n) => `${n.host}:${n.port}`);
// A cluster is reached through its nodes: the list for SAYIIR_TEST_REDIS_CLUSTER_NODES, the URL for the CLI.
if (nodes !== undefined)
  console.log(`nodes: ${nodes.join(",")}\nCLI URL: redis+cluster://${nodes.join(",")}`);
else console.log(server.info.url);
console.log("Ctrl-C stops it.");
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await server.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
// Keeps the process alive until a signal.
setInterval(() => {}, 1 << 30);
