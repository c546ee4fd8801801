import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** sendEvent: one event appended to the instance's pending events. */
export const SEND_EVENT = `--[[ sendEvent
  KEYS[1] the instance hash   KEYS[2] its events hash   KEYS[3] its event order
  KEYS[4] the request record "{P:K}:q:<request id>"   KEYS[5] the shard's ready set
  KEYS[6] its lease set   KEYS[7] its timer set
  ARGV[1] instance id   ARGV[2] event name   ARGV[3] payload   ARGV[4] request id (hex, one per
  call)   ARGV[5] request record ttl (ms)
  The sequence is the instance's counter + 1 (HINCRBY on the events hash), so it grows across
  names; sentAt is Redis's now. The payload goes in the events hash under the ${L.sequenceDigits}-digit
  sequence, the member "name NUL sequence NUL sentAt" in the order set. When the instance is
  InProgress and waits for this name, it is re-indexed (ready now, unless it already was).
  Idempotent per request id: a second run of the same call (its first reply lost, the command
  sent again) answers the sequence of the first run and appends nothing.
  Returns {OK, sequence}, {SNAPSHOT_NOT_FOUND} or {EVENTS_CLOSED, header} (Completed, Failed or
  Cancelled; the caller reads the status from the header).
]]
${PRELUDE}
local key, id, name = KEYS[1], ARGV[1], ARGV[2]
if ARGV[4] ~= '' then
  local done = call('GET', KEYS[4])
  if done then return { OK, done } end
end
local m = call('HMGET', key, ${L.finished}, ${L.header}, ${L.awaitedEvent})
if not m[1] then return { SNAPSHOT_NOT_FOUND } end
if m[1] == '1' then return { EVENTS_CLOSED, m[2] } end
local now_ms = clock()
local seq = string.format('%0${L.sequenceDigits}.0f', call('HINCRBY', KEYS[2], ${L.counter}, 1))
call('HSET', KEYS[2], seq, ARGV[3])
call('ZADD', KEYS[3], 0, name .. NUL .. seq .. NUL .. fmt(now_ms))
if ARGV[4] ~= '' then call('SET', KEYS[4], seq, 'PX', ARGV[5]) end
if m[3] == name then reindex(base_of(key, id), key, id, now_ms) end
return { OK, seq }
`;
