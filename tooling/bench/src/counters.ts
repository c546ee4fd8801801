// Round trips per task: how many statements / requests / commands the workers send to the server.
// - PostgreSQL: every `pg.Client#query` in the worker process (ours, pg-boss and graphile-worker all
//   load the same pg module, so one patch of the prototype counts them all).
// - DynamoDB: a middleware on the backend's own client counts the HTTP requests.
// - MongoDB: the driver's command monitoring (`monitorCommands: true` on the bench's clients in a
//   worker process, see targets.ts) and a count of the `commandStarted` events every MongoClient of
//   the process emits: the commands the workers send (a transaction's commit is one of them).
// - Redis: every `Redis#sendCommand` of ioredis in the worker process (ours and BullMQ load the same
//   ioredis). Separately, `INFO commandstats` on the server before and after the run counts the
//   commands Redis executed, those inside Lua scripts included: the server's work per task (the
//   parent's own polling of BullMQ's counts is subtracted).
import { readdirSync, readFileSync } from "node:fs";
import pg from "pg";

let pgStatements = 0;
let pgPatched = false;

/** Starts counting pg statements in this process (idempotent). */
export function countPgStatements(): void {
  if (pgPatched) return;
  pgPatched = true;
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = proto.query;
  proto.query = function (this: unknown, ...args: unknown[]) {
    pgStatements++;
    return original.apply(this, args);
  };
}

export function pgStatementCount(): number {
  return pgStatements;
}

let redisCommands = 0;
let redisPatched = false;

/** Starts counting ioredis commands in this process (idempotent). */
export async function countRedisCommands(): Promise<void> {
  if (redisPatched) return;
  redisPatched = true;
  const { Redis } = await import("ioredis");
  const proto = Redis.prototype as unknown as { sendCommand: (...args: unknown[]) => unknown };
  const original = proto.sendCommand;
  proto.sendCommand = function (this: unknown, ...args: unknown[]) {
    redisCommands++;
    return original.apply(this, args);
  };
}

export function redisCommandCount(): number {
  return redisCommands;
}

let mongoCommands = 0;
let mongoPatched = false;

/** Starts counting MongoDB commands (`commandStarted` events) of every MongoClient in this process. */
export async function countMongoCommands(): Promise<void> {
  if (mongoPatched) return;
  mongoPatched = true;
  const { MongoClient } = await import("mongodb");
  const proto = MongoClient.prototype as unknown as { emit: (event: unknown, ...args: unknown[]) => boolean };
  const original = proto.emit;
  proto.emit = function (this: unknown, event: unknown, ...args: unknown[]) {
    if (event === "commandStarted") mongoCommands++;
    return original.call(this, event, ...args);
  };
}

export function mongoCommandCount(): number {
  return mongoCommands;
}

let requests = 0;

interface MiddlewareClient {
  middlewareStack?: {
    add(
      middleware: (next: (args: unknown) => Promise<unknown>) => (args: unknown) => Promise<unknown>,
      options: { step: string; name: string },
    ): void;
  };
}

/** Counts the requests a DynamoDB client sends. */
export function countDynamoRequests(client: unknown): boolean {
  const stack = (client as MiddlewareClient | undefined)?.middlewareStack;
  if (!stack) return false;
  stack.add(
    (next) => async (args) => {
      requests++;
      return next(args);
    },
    { step: "finalizeRequest", name: "sayiirBenchCounter" },
  );
  return true;
}

export function dynamoRequestCount(): number {
  return requests;
}

/** Total commands the Redis server has executed (all clients), from INFO commandstats. */
export async function redisCommandTotal(url: string): Promise<number> {
  const { Redis } = await import("ioredis");
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    const info = await client.info("commandstats");
    let total = 0;
    for (const m of info.matchAll(/^cmdstat_[^:]+:calls=(\d+)/gm)) total += Number(m[1]);
    // This connection's own commands: the INFO itself (and the client handshake, if any).
    return total;
  } finally {
    client.disconnect();
  }
}

/**
 * CPU time (ms) used so far by a local server started by the test tooling: every process of its
 * process group and their direct children (PostgreSQL's backends call setsid(), so they are in groups
 * of their own; the time of exited backends is in the postmaster's cutime/cstime). undefined when
 * /proc is not readable or the group is unknown.
 */
export function groupCpuMs(pgid: number | undefined): number | undefined {
  if (pgid === undefined) return undefined;
  try {
    const ticks = 100; // USER_HZ on Linux
    const procs: Array<{ pid: number; ppid: number; pgrp: number; cpu: number }> = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      let stat: string;
      try {
        stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      } catch {
        continue;
      }
      // Fields after the command name (which may hold spaces), numbered from 3 (state).
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      procs.push({
        pid: Number(entry),
        ppid: Number(f[1]),
        pgrp: Number(f[2]),
        // utime, stime, cutime, cstime: fields 14-17
        cpu: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
      });
    }
    const members = new Set(procs.filter((p) => p.pgrp === pgid).map((p) => p.pid));
    let total = 0;
    for (const p of procs) if (members.has(p.pid) || members.has(p.ppid)) total += p.cpu;
    return (total * 1000) / ticks;
  } catch {
    return undefined;
  }
}

/** CPU ms of this process (user + system). */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
