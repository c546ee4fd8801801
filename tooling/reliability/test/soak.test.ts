// Crash soak, short form: 8 worker processes of the reference loop on SQLite and on Postgres, a
// random one SIGKILLed (or frozen past its lease) every 1.5-3.5 s. SAYIIR_SOAK_SECONDS sets the
// duration (default 20 s); the long form is `node src/soak.ts --backend <name> --seconds N`.

import { BackendUnavailable, parseBackendName } from "@sayiir/backends";
import { describe, expect, it } from "vitest";
import type { RecordedEvent } from "../src/recorder.ts";
import { BACKENDS } from "../src/registry.ts";
import { injectedUrls } from "../src/servers.ts";
import { analyze, runSoak } from "../src/soak.ts";

const SECONDS = Number(process.env.SAYIIR_SOAK_SECONDS ?? 20);
const SOAK_BACKENDS = (process.env.SAYIIR_SOAK_BACKENDS ?? "sqlite,postgres")
  .split(",")
  .map(parseBackendName);

describe("crash soak", () => {
  for (const name of SOAK_BACKENDS) {
    it(`${name}: 8 workers, random SIGKILL/SIGSTOP for ${SECONDS} s: no double claim, no fenced-out write, all complete`, {
      timeout: (SECONDS + 150) * 1000,
    }, async (ctx) => {
      try {
        const probe = await BACKENDS[name].create(injectedUrls());
        await probe.backend.close();
        await probe.cleanup();
      } catch (error) {
        if (error instanceof BackendUnavailable) {
          console.warn(`[reliability] crash soak: SKIPPED backend ${name}: ${error.message}`);
          ctx.skip(error.message);
        }
        throw error;
      }
      const report = await runSoak({ backend: name, urls: injectedUrls(), seconds: SECONDS });
      expect(report.violations).toEqual([]);
      expect(report.completed).toBe(report.workflows);
      expect(report.kills).toBeGreaterThan(0);
      expect(report.claims).toBeGreaterThan(report.workflows);
    });
  }
});

describe("soak analysis can fail", () => {
  const claim = (w: string, tok: number, ca: number, ea: number, q = ca, r = ca): RecordedEvent => ({
    k: "claim",
    w,
    i: "wf",
    t: "t",
    tok,
    ca,
    ea,
    q,
    r,
  });
  it("finds overlapping live claims, a token granted twice, a renewed stolen lease and a fenced-out write", () => {
    expect(analyze([claim("a", 1, 0, 1000), claim("b", 2, 1100, 2100)]).violations).toEqual([]);
    expect(analyze([claim("a", 1, 0, 1000), claim("b", 2, 500, 1500)]).violations[0]).toMatch(/^overlap/);
    expect(analyze([claim("a", 5, 0, 1000), claim("b", 5, 2000, 3000)]).violations[0]).toMatch(
      /granted twice/,
    );
    const renewed = analyze([
      claim("a", 1, 0, 1000),
      claim("b", 2, 1100, 2100),
      { k: "extend", w: "a", i: "wf", t: "t", tok: 1, ea: 2200, d: 1000, q: 1200, r: 1200 },
    ]);
    expect(renewed.violations.some((v) => v.includes("extended token 1"))).toBe(true);
    const stale = analyze([
      claim("a", 1, 0, 1000),
      claim("b", 2, 1100, 2100),
      { k: "write", op: "snapshot", w: "a", i: "wf", t: "t", tok: 1, ok: true, code: null, q: 1300, r: 1310 },
    ]);
    expect(stale.violations.some((v) => v.startsWith("fenced-out write landed"))).toBe(true);
    // A release before the takeover is not an overlap.
    expect(
      analyze([
        claim("a", 1, 0, 1000),
        { k: "release-req", w: "a", i: "wf", t: "t", q: 100 },
        claim("b", 2, 200, 1200, 200, 210),
      ]).violations,
    ).toEqual([]);
  });
});
