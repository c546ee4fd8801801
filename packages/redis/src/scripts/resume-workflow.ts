import { CONTROL, PRELUDE } from "./lua.js";

/** resumeWorkflow: InProgress again at the same position, back in the index. */
export const RESUME_WORKFLOW = `--[[ resumeWorkflow
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  KEYS[4] its timer set       KEYS[5] the instance's event order
  ARGV: see CONTROL (lua.ts); the new header is the kit's transitionHeader("resume").
  Applies the new header and index fields when the instance is as read, then re-indexes it: its
  ready task in the ready (or lease) set; a wait in the ready set when an event of its name is
  pending (sent while it was paused, say) or its timeout has passed, else in the timer set.
  Returns OK, SNAPSHOT_NOT_FOUND or CHANGED (read again).
]]
${PRELUDE}${CONTROL}
local state = as_read()
if state then return state end
apply()
reindex(base_of(key, id), key, id, clock())
return OK
`;
