import { describe, it } from "vitest";
import { claimNextGroup } from "./groups/claim-next.js";
import { claimsGroup } from "./groups/claims.js";
import { completionGroup } from "./groups/completion.js";
import { concurrencyGroup } from "./groups/concurrency.js";
import { controlGroup } from "./groups/control.js";
import { discoveryGroup } from "./groups/discovery.js";
import { durabilityGroup } from "./groups/durability.js";
import { errorsGroup } from "./groups/errors.js";
import { eventsGroup } from "./groups/events.js";
import { expiryGroup } from "./groups/expiry.js";
import { fencingGroup } from "./groups/fencing.js";
import { purgeGroup } from "./groups/purge.js";
import { schedulingGroup } from "./groups/scheduling.js";
import { sizesGroup } from "./groups/sizes.js";
import { snapshotsGroup } from "./groups/snapshots.js";
import { stepsGroup } from "./groups/steps.js";
import { taskClaimsGroup } from "./groups/task-claims.js";
import { taskResultReadsGroup } from "./groups/task-result-reads.js";
import { taskResultsGroup } from "./groups/task-results.js";
import { validationGroup } from "./groups/validation.js";
import { wakeUpsGroup } from "./groups/wake-ups.js";
import type { ConformanceOptions, GroupName } from "./types.js";

export type { BackendCapabilities } from "../backend.js";
export { atTask, awaiting, comparable, finished, inProgress, queued } from "./fixtures.js";
export {
  allByteValues,
  beforeDeadline,
  claimOrFail,
  eventually,
  expectCode,
  expirySlackMs,
  patternBytes,
  rejection,
  sleep,
  text,
  uid,
  useSubject,
} from "./harness.js";
export type {
  ConformanceOptions,
  ConformanceSubject,
  GroupName,
  SubjectOptions,
} from "./types.js";
export { GROUP_NAMES } from "./types.js";
export {
  claimNextGroup,
  claimsGroup,
  completionGroup,
  concurrencyGroup,
  controlGroup,
  discoveryGroup,
  durabilityGroup,
  errorsGroup,
  eventsGroup,
  expiryGroup,
  fencingGroup,
  purgeGroup,
  schedulingGroup,
  sizesGroup,
  snapshotsGroup,
  stepsGroup,
  taskClaimsGroup,
  taskResultReadsGroup,
  taskResultsGroup,
  validationGroup,
  wakeUpsGroup,
};

/** Each group by name, so an adapter can run one group in a test file of its own. */
export const conformanceGroups: Record<GroupName, (options: ConformanceOptions) => void> = {
  snapshots: snapshotsGroup,
  "task results": taskResultsGroup,
  "task-result reads": taskResultReadsGroup,
  claims: claimsGroup,
  "task claims": taskClaimsGroup,
  expiry: expiryGroup,
  fencing: fencingGroup,
  "claim-next": claimNextGroup,
  completion: completionGroup,
  control: controlGroup,
  events: eventsGroup,
  scheduling: schedulingGroup,
  steps: stepsGroup,
  "wake-ups": wakeUpsGroup,
  purge: purgeGroup,
  discovery: discoveryGroup,
  validation: validationGroup,
  errors: errorsGroup,
  sizes: sizesGroup,
  concurrency: concurrencyGroup,
  durability: durabilityGroup,
};

/**
 * Registers every conformance group for one backend. Call it at the top level of a vitest
 * test file. Groups skip only from `backend.capabilities` and the subject's hooks.
 */
export function runConformance(options: ConformanceOptions): void {
  describe(`conformance: ${options.name}`, () => {
    for (const group of Object.values(conformanceGroups)) group(options);
  });
}

/**
 * Runs the whole kit once per target (a server version, a mode such as a cluster). With no
 * target, registers one skipped test whose name says why (for example how to get the server), so
 * a missing server is visible and never silently passes. This is what an adapter's one-line
 * conformance test file calls, with the targets its `test/subject.ts` lists.
 */
export function runConformanceOn(targets: readonly ConformanceOptions[], missing: string): void {
  if (targets.length === 0) {
    describe("conformance", () => {
      it.skip(missing, () => {});
    });
    return;
  }
  for (const target of targets) runConformance(target);
}
