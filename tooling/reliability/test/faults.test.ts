// Network faults through the TCP proxy, for every server backend: with the proxy cut (server gone)
// or blackholed (half-open: accepted, never answered), every operation fails with a typed
// BackendError within a bound; after healing the same backend instance works again; and work that
// was in flight when the fault hit is never half-applied (each claim and fenced write is whole or absent).

import { BACKEND_NAMES, type BackendName, SERVER_KINDS, serverAddress } from "@sayiir/backends";
import { atTask } from "@sayiir/persistence-core/conformance";
import { describe, expect, it } from "vitest";
import { outcome, timed, withSubject } from "../src/harness.ts";
import { inFlightUnderFault, recover } from "../src/inflight.ts";
import { FaultProxy } from "../src/proxy.ts";
import { injectedUrls } from "../src/servers.ts";

const SUITE = "network faults";
const SERVER_BACKENDS = BACKEND_NAMES.filter((n) => SERVER_KINDS[n] !== null);
/** Driver timeouts configured on the backend under test. */
const TIMEOUT_MS = 1000;
/** Every operation must settle within this while the network is faulty. */
const BOUND_MS = 15_000;
/** After healing, the same backend instance must work again within this. */
const RECOVERY_MS = 20_000;
const MODES = ["cut", "blackhole"] as const;

/**
 * Real adapter bugs this suite finds and that are not fixed yet. Their test runs as `it.fails`
 * (green while the bug stands, red once fixed: then delete the entry), with shorter waits, and
 * the mid-flight variant is skipped with a message.
 */
const KNOWN_BUGS: Partial<Record<`${BackendName}:${(typeof MODES)[number] | "cold-start"}`, string>> = {
  // None open. Found and fixed so far: mongo cold start (the driver closed its topology for good),
  // redis blackhole (a half-open socket kept forever), dynamodb blackhole (requestTimeout only warned).
};

const bytes = (...v: number[]) => Uint8Array.from(v);

describe(SUITE, () => {
  for (const name of SERVER_BACKENDS) {
    for (const mode of MODES) {
      const known = KNOWN_BUGS[`${name}:${mode}`];
      const recoveryMs = known ? 8_000 : RECOVERY_MS;
      const title = `${name}, ${mode}: operations fail typed within ${BOUND_MS} ms, then the backend recovers`;
      (known ? it.fails : it)(known ? `${title} [KNOWN BUG: ${known}]` : title, async (ctx) => {
        const address = serverAddress(name, injectedUrls());
        if (address === null) {
          console.warn(`[reliability] ${SUITE}: SKIPPED backend ${name}: no server`);
          ctx.skip(`no ${name} server`);
        }
        const proxy = await FaultProxy.start(address!);
        try {
          await withSubject(
            SUITE,
            name,
            ctx,
            { via: proxy, timeoutMs: TIMEOUT_MS },
            async (subject, open) => {
              const b = subject.backend;
              await b.saveSnapshot(atTask("f-1", "t1"));
              await b.saveSnapshot(atTask("f-2", "t1"));
              const claim = await b.claimTask("f-1", "t1", "w1", 60_000);
              expect(claim).not.toBeNull();

              if (mode === "cut") proxy.cut();
              else proxy.blackhole();
              const ops: Array<[string, () => Promise<unknown>]> = [
                ["loadSnapshot", () => b.loadSnapshot("f-1")],
                ["saveTaskResult (fenced)", () => b.saveTaskResult("f-1", "t1", bytes(1), { claim: claim! })],
                ["saveSnapshot", () => b.saveSnapshot(atTask("f-3", "t1"))],
                ["claimTask", () => b.claimTask("f-2", "t1", "w2", 60_000)],
                ["claimAvailableTasks", () => b.claimAvailableTasks("w3", 5, 60_000)],
                ["findAvailableTasks", () => b.findAvailableTasks("w3", 5)],
                ["listSnapshots", () => b.listSnapshots()],
                ["deleteSnapshot", () => b.deleteSnapshot("f-2")],
              ];
              const results = await Promise.all(
                ops.map(async ([op, call]) => ({ op, ...(await timed(call(), BOUND_MS + 1000)) })),
              );
              console.info(
                `[reliability] ${SUITE} ${name} ${mode}: ${results.map((r) => `${r.op} ${r.result} in ${r.ms} ms`).join(", ")}`,
              );
              for (const r of results) {
                expect(r.result, `${r.op} during ${mode}`).toBe("BACKEND");
                expect(r.ms, `${r.op} during ${mode}`).toBeLessThan(BOUND_MS);
              }

              proxy.pass();
              const recoveredMs = await recover(b, "f-1", recoveryMs);
              console.info(
                `[reliability] ${SUITE} ${name} ${mode}: recovered ${recoveredMs} ms after healing`,
              );
              // Nothing reached the server while it was unreachable: the store is exactly as before.
              const direct = await open({ direct: true });
              const f1 = await direct.loadSnapshot("f-1");
              expect(f1.state).toMatchObject({
                kind: "InProgress",
                lastCompletedTaskId: null,
                completedTasks: {},
              });
              expect(await outcome(direct.loadSnapshot("f-3"))).toBe("NOT_FOUND");
              expect(await outcome(direct.loadSnapshot("f-2"))).toBe("ok");
              // The live claim is intact and fenced writes with it work through the healed backend.
              expect(await direct.claimTask("f-1", "t1", "probe", 60_000)).toBeNull();
              await b.saveTaskResult("f-1", "t1", bytes(2), { claim: claim! });
              const ready = await b.claimAvailableTasks("w3", 5, 60_000);
              expect(ready.map((t) => t.instanceId)).toEqual(["f-2"]);
            },
          );
        } finally {
          await proxy.close();
        }
      });

      if (mode === "cut") {
        const knownCold = KNOWN_BUGS[`${name}:cold-start`];
        const coldTitle = `${name}: a backend first used while the server is unreachable recovers once it is back`;
        (knownCold ? it.fails : it)(
          knownCold ? `${coldTitle} [KNOWN BUG: ${knownCold}]` : coldTitle,
          async (ctx) => {
            const address = serverAddress(name, injectedUrls());
            if (address === null) {
              console.warn(`[reliability] ${SUITE}: SKIPPED backend ${name}: no server`);
              ctx.skip(`no ${name} server`);
            }
            const proxy = await FaultProxy.start(address!);
            try {
              await withSubject(
                SUITE,
                name,
                ctx,
                { via: proxy, timeoutMs: TIMEOUT_MS },
                async (subject, open) => {
                  await (await open({ direct: true })).saveSnapshot(atTask("cold", "t"));
                  proxy.cut();
                  const cold = await open({ via: proxy, timeoutMs: TIMEOUT_MS });
                  const first = await timed(cold.loadSnapshot("cold"), BOUND_MS + 1000);
                  expect(first.result).toBe("BACKEND");
                  expect(first.ms).toBeLessThan(BOUND_MS);
                  proxy.pass();
                  const ms = await recover(cold, "cold", knownCold ? 8_000 : RECOVERY_MS);
                  console.info(`[reliability] ${SUITE} ${name} cold start: recovered ${ms} ms after healing`);
                  expect(await cold.claimTask("cold", "t", "w", null)).not.toBeNull();
                  void subject;
                },
              );
            } finally {
              await proxy.close();
            }
          },
        );
      }

      it(`${name}, ${mode} mid-flight: every claim and fenced write is whole or absent`, async (ctx) => {
        if (known) {
          console.warn(`[reliability] ${SUITE}: SKIPPED ${name} ${mode} mid-flight: known bug: ${known}`);
          ctx.skip(`known bug: ${known}`);
        }
        const address = serverAddress(name, injectedUrls());
        if (address === null) {
          console.warn(`[reliability] ${SUITE}: SKIPPED backend ${name}: no server`);
          ctx.skip(`no ${name} server`);
        }
        const proxy = await FaultProxy.start(address!);
        try {
          await withSubject(
            SUITE,
            name,
            ctx,
            { via: proxy, timeoutMs: TIMEOUT_MS },
            async (subject, open) => {
              const report = await inFlightUnderFault({
                b: subject.backend,
                direct: () => open({ direct: true }),
                fault: () => (mode === "cut" ? proxy.cut() : proxy.blackhole()),
                heal: () => proxy.pass(),
                boundMs: BOUND_MS,
                recoveryMs: RECOVERY_MS,
              });
              console.info(
                `[reliability] ${SUITE} ${name} ${mode} mid-flight: ${report.written} written, ${report.claimedOnly} claimed only, ${report.untouched} untouched, ${report.typedFailures} typed failures`,
              );
            },
          );
        } finally {
          await proxy.close();
        }
      });
    }
  }
});
