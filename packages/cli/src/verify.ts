import type { PersistentBackend } from "@sayiir/persistence-core";
import { mapLimit } from "./concurrency.js";
import { differences, digestWorkflow } from "./digest.js";
import { orGone, pages, readWorkflow } from "./workflow.js";

export interface Mismatch {
  instanceId: string;
  /** "missing on target", or the parts that differ. */
  problem: string;
}

export interface VerifyResult {
  compared: number;
  mismatches: Mismatch[];
  /** Workflows the target holds that the source does not (first ones listed; the count is exact). */
  extra: { count: number; ids: string[] };
}

/** Claims about to expire are left out on both sides: the two copies expire a few ms apart. */
const CLAIM_MARGIN_MS = 2_000;

/**
 * Compares the digest of every workflow of the source with the same workflow on the target, page
 * by page; then, when the target holds more workflows than were compared, lists those it holds
 * alone.
 */
export async function verifyCopy(
  from: PersistentBackend,
  to: PersistentBackend,
  options: { pageSize: number; concurrency: number; keepClaims: boolean; onPage?: (n: number) => void },
): Promise<VerifyResult> {
  const mismatches: Mismatch[] = [];
  let compared = 0;
  const liveAfter = options.keepClaims ? Date.now() + CLAIM_MARGIN_MS : null;
  const claims = { claims: options.keepClaims };
  for await (const page of pages(from, options.pageSize)) {
    await mapLimit(page.ids, options.concurrency, async (id) => {
      const source = await readWorkflow(from, id, claims);
      if (source === null) return; // deleted from the source meanwhile
      compared++;
      const target = await readWorkflow(to, id, claims);
      if (target === null) {
        mismatches.push({ instanceId: id, problem: "missing on target" });
        return;
      }
      const parts = differences(digestWorkflow(source, liveAfter), digestWorkflow(target, liveAfter));
      if (parts.length > 0) mismatches.push({ instanceId: id, problem: `${parts.join(", ")} differ` });
    });
    options.onPage?.(page.ids.length);
  }
  let targetCount = 0;
  for await (const page of pages(to, options.pageSize)) targetCount += page.ids.length;
  const extra = { count: 0, ids: [] as string[] };
  if (targetCount > compared) {
    for await (const page of pages(to, options.pageSize)) {
      await mapLimit(page.ids, options.concurrency, async (id) => {
        if ((await orGone(() => from.loadSnapshot(id))) !== null) return;
        extra.count++;
        if (extra.ids.length < 100) extra.ids.push(id);
      });
    }
  }
  mismatches.sort((a, b) => (a.instanceId < b.instanceId ? -1 : 1));
  return { compared, extra, mismatches };
}
