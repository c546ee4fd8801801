import { L } from "../layout.js";

/** loadPendingEvents: the instance's pending events. */
export const LOAD_EVENTS = `--[[ loadPendingEvents
  KEYS[1] the instance hash   KEYS[2] its events hash   KEYS[3] its event order
  Returns nil when there is no snapshot, else {order members ("name NUL sequence NUL sentAt",
  by name then sequence), the events hash flat (field, value, ...: the counter and the payloads
  by sequence)}.
]]
if redis.call('HEXISTS', KEYS[1], ${L.finished}) == 0 then return false end
return { redis.call('ZRANGE', KEYS[3], 0, -1), redis.call('HGETALL', KEYS[2]) }
`;
