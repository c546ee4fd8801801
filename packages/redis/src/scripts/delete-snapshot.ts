import { FINISH } from "./finish.js";
import { PRELUDE } from "./lua.js";

/** deleteSnapshot: the instance, its outputs, claims and events, out of every index. */
export const DELETE_SNAPSHOT = `--[[ deleteSnapshot
  KEYS[1] the instance hash   KEYS[2] the shard's ready set (the instance's queue's is built in Lua)   KEYS[3] its ids set
  KEYS[4] its token floor     KEYS[5] its lease set   KEYS[6] its timer set
  KEYS[7] the instance's events hash   KEYS[8] the instance's event order
  ARGV[1] instance id
  The highest token of the instance (in its claims and tombstones) is kept in the shard's floor,
  so a re-created instance never issues a token that an old claim already holds. The instance
  also leaves the shard's finish-time index (built in Lua from the shard's base, like the
  queue's sets): see drop_instance (finish.ts), which purgeFinished shares.
  Returns OK or SNAPSHOT_NOT_FOUND.
]]
${PRELUDE}${FINISH}
local key = KEYS[1]
if not exists(key) then return SNAPSHOT_NOT_FOUND end
drop_instance(base_of(key, ARGV[1]), key, ARGV[1])
return OK
`;
