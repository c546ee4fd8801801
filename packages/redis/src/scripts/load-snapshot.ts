import { L } from "../layout.js";

/** loadSnapshot: the whole instance hash in one reply. */
export const LOAD_SNAPSHOT = `--[[ loadSnapshot
  KEYS[1] the instance hash
  Returns its fields and values, flat (claims among them), or nil when there is no snapshot.
]]
if redis.call('HEXISTS', KEYS[1], ${L.finished}) == 0 then return false end
return redis.call('HGETALL', KEYS[1])
`;
