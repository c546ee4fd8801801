// The lease and fencing checks over the recorded claim/extend/release/write history: no two
// workers ever held a live claim on one task at once, tokens are unique and follow claim order, no
// lease was renewed after someone else took it, and no fenced-out write landed.
import type { RecordedEvent } from "../recorder.ts";

type Claim = Extract<RecordedEvent, { k: "claim" }>;

/**
 * The checks over the recorded history. Sound: every reported violation is a real one. A release
 * request (release-req) of the holder before the next claim means the claim may have been released.
 */
export function analyze(events: RecordedEvent[]): {
  claims: number;
  takeovers: number;
  extends: number;
  fencedWrites: number;
  refusedWrites: number;
  refusedExtends: number;
  violations: string[];
} {
  const violations: string[] = [];
  const key = (i: string, t: string) => `${i}\u0000${t}`;
  const claims = new Map<string, Claim[]>();
  const extendsBy = new Map<string, Array<Extract<RecordedEvent, { k: "extend" }>>>();
  const releaseReqs = new Map<string, number[]>();
  let claimCount = 0;
  let extendCount = 0;
  for (const e of events) {
    if (e.k === "claim") {
      claimCount++;
      const list = claims.get(key(e.i, e.t)) ?? [];
      list.push(e);
      claims.set(key(e.i, e.t), list);
    } else if (e.k === "extend") {
      extendCount++;
      const k = `${key(e.i, e.t)}\u0000${e.tok}`;
      const list = extendsBy.get(k) ?? [];
      list.push(e);
      extendsBy.set(k, list);
    } else if (e.k === "release-req") {
      const k = `${key(e.i, e.t)}\u0000${e.w}`;
      const list = releaseReqs.get(k) ?? [];
      list.push(e.q);
      releaseReqs.set(k, list);
    }
  }
  let takeovers = 0;
  for (const [k, list] of claims) {
    list.sort((a, b) => a.tok - b.tok);
    for (let n = 0; n < list.length; n++) {
      const a = list[n]!;
      const b = list[n + 1];
      if (b !== undefined && b.tok === a.tok) {
        violations.push(`token ${a.tok} on ${k.replace("\u0000", "/")} granted twice (${a.w} and ${b.w})`);
        continue;
      }
      if (n > 0 && list[n - 1]!.ca > a.ca) {
        violations.push(
          `tokens on ${k.replace("\u0000", "/")} do not follow claim order (${list[n - 1]!.tok} at ${list[n - 1]!.ca}, ${a.tok} at ${a.ca})`,
        );
      }
      if (b === undefined) continue;
      // Did a release request of a's holder come before b's claim returned? Then a may have been released.
      const released = (releaseReqs.get(`${k}\u0000${a.w}`) ?? []).some((q) => q >= a.q && q <= b.r);
      if (!released) takeovers++;
      // a's latest known expiry (lower bound of the real one: an extension whose answer was lost is unknown).
      let expiry = a.ea ?? Number.POSITIVE_INFINITY;
      for (const x of extendsBy.get(`${k}\u0000${a.tok}`) ?? []) {
        if (x.ea === null) expiry = Number.POSITIVE_INFINITY;
        else expiry = Math.max(expiry, x.ea);
        // The extension happened at server time ea - d; it must not renew a claim someone else already took.
        if (x.ea !== null && x.ea - x.d > b.ca) {
          violations.push(
            `${a.w} extended token ${a.tok} on ${k.replace("\u0000", "/")} at ${x.ea - x.d}, after ${b.w} claimed it (token ${b.tok}) at ${b.ca}`,
          );
        }
      }
      if (!released && b.ca < expiry) {
        violations.push(
          `overlap on ${k.replace("\u0000", "/")}: ${b.w} claimed (token ${b.tok}) at ${b.ca} while ${a.w}'s token ${a.tok} was live until ${expiry}`,
        );
      }
    }
  }
  let fencedWrites = 0;
  let refusedWrites = 0;
  for (const e of events) {
    if (e.k !== "write" || e.tok === null || e.t === null) continue;
    fencedWrites++;
    if (!e.ok && e.code === "CLAIM_LOST") refusedWrites++;
    if (!e.ok) continue;
    // A successful fenced write sent after a newer claim on that task had been granted: it must have been refused.
    const newer = (claims.get(key(e.i, e.t)) ?? []).find((c) => c.tok > e.tok! && c.r < e.q);
    if (newer !== undefined) {
      violations.push(
        `fenced-out write landed: ${e.w} wrote ${e.op} of ${e.i} with token ${e.tok} at ${e.q}, after ${newer.w} got token ${newer.tok} at ${newer.r}`,
      );
    }
  }
  const refusedExtends = events.filter((e) => e.k === "extend-fail" && e.code === "CLAIM_LOST").length;
  return {
    claims: claimCount,
    takeovers,
    extends: extendCount,
    fencedWrites,
    refusedWrites,
    refusedExtends,
    violations,
  };
}
