// The order in which a server of one kind is obtained: an explicit URL from the environment, then
// testcontainers (when a container runtime exists), then a local server installed by install.ts.
// Nothing here installs anything: a missing local server is reported, and with CI=true it is an error.
import { isCi } from "./config.ts";
import { detectContainerRuntime } from "./container-runtime.ts";
import { ENV_VARS, howToGet, type ServerInfo, type ServerKind } from "./index.ts";
import { errorMessage, log, since, warn } from "./log.ts";

export interface Started<T extends ServerInfo> {
  info: T;
  stop(): Promise<void>;
}

/** A local server that can be started, or why it cannot (checked without starting anything). */
export type LocalPlan<T extends ServerInfo> =
  | { available: true; label: string; start(): Promise<Started<T>> }
  | { available: false; label: string; reason: string };

export interface ObtainSpec<T extends ServerInfo> {
  kind: ServerKind;
  /** Connects to what the environment variable names; throws if that does not work. */
  fromEnv(value: string): Promise<Array<Started<T>>>;
  /** Undefined when this kind has no container path (the Redis Cluster). */
  fromContainers?: () => Promise<Array<Started<T>>>;
  localPlans(): Array<LocalPlan<T>>;
}

export interface Obtained<T extends ServerInfo> {
  servers: Array<Started<T>>;
  /** Set when nothing could be obtained (outside CI only). */
  unavailable?: string;
}

export async function obtain<T extends ServerInfo>(spec: ObtainSpec<T>): Promise<Obtained<T>> {
  const started = performance.now();
  const result = await obtainUntimed(spec);
  for (const s of result.servers) {
    log(
      `${spec.kind}: ${s.info.server}, version ${s.info.version}, at ${redact(s.info.url)} [${s.info.source}]`,
    );
  }
  if (result.servers.length > 0) log(`${spec.kind}: ready in ${since(started)} ms`);
  return result;
}

async function obtainUntimed<T extends ServerInfo>(spec: ObtainSpec<T>): Promise<Obtained<T>> {
  const envVar = ENV_VARS[spec.kind];
  const envValue = process.env[envVar]?.trim();
  if (envValue) {
    try {
      return { servers: await spec.fromEnv(envValue) };
    } catch (error) {
      // An explicit setting that does not work is always an error, never a silent fallback.
      throw new Error(`${spec.kind}: ${envVar}=${redact(envValue)} does not work: ${errorMessage(error)}`);
    }
  }

  let containers = "no container path for this kind";
  if (spec.fromContainers) {
    const runtime = await detectContainerRuntime();
    containers = "no container runtime";
    if (runtime.available) {
      try {
        return { servers: await spec.fromContainers() };
      } catch (error) {
        containers = "testcontainers failed";
        warn(`${spec.kind}: testcontainers failed (${errorMessage(error)}); trying a local server`);
      }
    }
  }

  const plans = spec.localPlans();
  const missing = plans.filter((p) => !p.available);
  const runnable = plans.filter((p) => p.available);
  if (missing.length > 0) {
    const what = missing.map((p) => `${p.label}: ${p.reason}`).join("; ");
    const message = `${spec.kind}: no server (${envVar} unset, ${containers}, ${what}). To get one: ${howToGet(spec.kind)}`;
    // CI must test every backend for real: any missing local server fails the run.
    if (isCi()) throw new Error(`CI=true and ${message}`);
    if (runnable.length === 0) {
      warn(message);
      return { servers: [], unavailable: message };
    }
    warn(message);
  }
  const outcomes = await Promise.allSettled(runnable.map((p) => p.start()));
  const servers = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
  const failures = outcomes.flatMap((o, i) =>
    o.status === "rejected" ? [`${runnable[i]?.label}: ${errorMessage(o.reason)}`] : [],
  );
  if (failures.length > 0) {
    await Promise.allSettled(servers.map((s) => s.stop()));
    throw new Error(`${spec.kind}: local server failed to start: ${failures.join("\n")}`);
  }
  return { servers };
}

/** Hides the password of a URL for messages. */
export function redact(value: string): string {
  return value.replace(/\/\/([^:/@]+):[^@/]*@/g, "//$1:***@");
}
