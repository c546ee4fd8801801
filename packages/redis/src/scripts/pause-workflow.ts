import { CONTROL, PRELUDE } from "./lua.js";

/** pauseWorkflow: Paused, out of every index; claims and events stay. */
export const PAUSE_WORKFLOW = `--[[ pauseWorkflow
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  KEYS[4] its timer set
  ARGV: see CONTROL (lua.ts); the new header is the kit's transitionHeader("pause").
  Applies the new header when the instance is as read (status Paused, no position task, no
  wait: nothing makes it ready) and takes it out of the ready, lease and timer sets. Claims stay
  live; results still land; events are kept.
  Returns OK, SNAPSHOT_NOT_FOUND or CHANGED (read again).
]]
${PRELUDE}${CONTROL}
local state = as_read()
if state then return state end
apply()
unindex(base_of(key, id), key, id)
return OK
`;
