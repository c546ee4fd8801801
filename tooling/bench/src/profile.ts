// Where the time of one task goes: each call of the worker cycle, one at a time and then with W
// concurrent callers, with its latency, the server's CPU time per call (local servers: the whole
// process group) and the requests it sends. Answers "which statement or script costs what".
//
//   node src/profile.ts [--backends redis,postgres] [--tasks 2000] [--workers 16] [--batch 8]
import { parseArgs } from "node:util";
import { parseBackendName, SERVER_KINDS } from "@sayiir/backends";
import type { ClaimedTask, PersistentBackend } from "@sayiir/persistence-core";
import {
  countPgStatements,
  countRedisCommands,
  groupCpuMs,
  pgStatementCount,
  redisCommandCount,
} from "./counters.ts";
import { outputFor } from "./sayiir-workers.ts";
import { type ServerKindUsed, startServers } from "./servers.ts";
import { resolveBackends } from "./targets.ts";
import { fmtMs, forEachConcurrent } from "./util.ts";
import { preload, readyId, readySnapshot } from "./workload.ts";

const { values } = parseArgs({
  options: {
    backends: { type: "string", default: "redis,postgres" },
    tasks: { type: "string", default: "2000" },
    workers: { type: "string", default: "16" },
    batch: { type: "string", default: "8" },
  },
});
const names = values.backends.split(",").map(parseBackendName);
const tasks = Number(values.tasks);
const workers = Number(values.workers);
const batch = Number(values.batch);

await countRedisCommands();
countPgStatements();
const requests = () => redisCommandCount() + pgStatementCount();

const kinds = names.flatMap((n): ServerKindUsed[] => {
  const kind = SERVER_KINDS[n];
  return kind === null ? [] : [kind];
});
const servers = await startServers(kinds);
try {
  const targets = await resolveBackends(names, servers);
  for (const [name, a] of targets) {
    if (!a.ok) {
      console.log(`${name}: skipped: ${a.reason}`);
      continue;
    }
    // Variants differ only in how scenario 1 finishes tasks; the profile measures every call anyway.
    for (const target of [a.target]) {
      const store = await target.createStore("prof");
      const backend: PersistentBackend = await store.open(workers + 2);
      const pgid = target.serverInfo?.control?.pgid;
      try {
        await preload(backend, tasks, (i) => readySnapshot(readyId("p", i), i), 64);
        const rows: string[] = [];
        const measure = async (label: string, calls: number, fn: () => Promise<void>) => {
          const cpu0 = groupCpuMs(pgid);
          const r0 = requests();
          const t0 = performance.now();
          await fn();
          const ms = performance.now() - t0;
          const cpu1 = groupCpuMs(pgid);
          const cpu = cpu0 === undefined || cpu1 === undefined ? Number.NaN : (cpu1 - cpu0) / calls;
          rows.push(
            `| ${target.label} | ${label} | ${calls} | ${fmtMs(ms / calls)} | ${fmtMs(cpu)} | ${((requests() - r0) / calls).toFixed(2)} |`,
          );
        };
        // Half the tasks one call at a time, the other half with W concurrent callers.
        const half = Math.floor(tasks / 2);
        for (const [mode, concurrency] of [
          ["sequential", 1],
          [`${workers} concurrent`, workers],
        ] as const) {
          const claimed: ClaimedTask[] = [];
          const claimCalls = Math.ceil(half / batch);
          await measure(`${mode}: claimAvailableTasks(${batch})`, claimCalls, () =>
            forEachConcurrent(claimCalls, concurrency, async (k) => {
              claimed.push(...(await backend.claimAvailableTasks(`w${k % workers}`, batch, 300_000)));
            }),
          );
          // The first half of the claimed tasks per task (fenced saveTaskResult + release), the second
          // half in completeTasks calls of one claimed batch each.
          const perTask = claimed.slice(0, Math.floor(claimed.length / 2));
          const batched = claimed.slice(perTask.length);
          await measure(`${mode}: saveTaskResult (fenced)`, perTask.length, () =>
            forEachConcurrent(perTask.length, concurrency, async (i) => {
              const t = perTask[i]!;
              await backend.saveTaskResult(t.instanceId, t.taskId, outputFor("w", 1), { claim: t.claim });
            }),
          );
          await measure(`${mode}: releaseTaskClaim`, perTask.length, () =>
            forEachConcurrent(perTask.length, concurrency, async (i) => {
              const t = perTask[i]!;
              await backend.releaseTaskClaim(t.instanceId, t.taskId, t.claim.workerId);
            }),
          );
          const calls = Math.ceil(batched.length / batch);
          await measure(`${mode}: completeTasks(${batch}) per task`, batched.length, () =>
            forEachConcurrent(calls, concurrency, async (k) => {
              const slice = batched.slice(k * batch, (k + 1) * batch);
              await backend.completeTasks(slice.map(({ claim }) => ({ claim, output: outputFor("w", 1) })));
            }),
          );
        }
        console.log(
          `\n| backend | call | calls | ms per call | server CPU ms per call | requests per call |`,
        );
        console.log(`| --- | --- | --- | --- | --- | --- |`);
        for (const r of rows) console.log(r);
      } finally {
        await backend.close();
        await store.drop();
      }
    }
  }
} finally {
  await servers.stop();
}
process.exit(0);
