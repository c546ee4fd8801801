import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** saveSnapshot: the snapshot's fields and outputs, replaced in one step. */
export const SAVE_SNAPSHOT = `--[[ saveSnapshot
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its ids set
  KEYS[4] its lease set
  ARGV[1] instance id         ARGV[2] header (toStoredSnapshot's: no outputs, no initial input)
  ARGV[3] finished ('1'/'0')  ARGV[4] definitionHash
  ARGV[5] position task id ('' = none)  ARGV[6] lastCompletedTaskId ('' = none)
  ARGV[7] ready task id ('' = none)     ARGV[8] updatedAt
  ARGV[9] has an initial input ('1'/'0')  ARGV[10] initial input
  ARGV[11] fence task id      ARGV[12] fence token ('' = no fence)
  ARGV[13..] ("r:" .. task id, output) pairs
  Replaces every field of the snapshot and every output; the claims stay.
  Returns OK, FENCE_REJECTED (the fence is not the live claim) or CANNOT_REOPEN (a finished
  workflow would go back to InProgress), checked in that order.
]]
${PRELUDE}
local now_ms = clock()
local key = KEYS[1]
if not fence_ok(key, ARGV[11], ARGV[12], now_ms) then return FENCE_REJECTED end
if ARGV[3] == '0' and call('HGET', key, ${L.finished}) == '1' then return CANNOT_REOPEN end
local old = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, ${L.claimLength}) ~= ${L.claim} then old[#old + 1] = field end
end
call_chunked('HDEL', key, old)
local fields = { ${L.header}, ARGV[2], ${L.finished}, ARGV[3], ${L.definitionHash}, ARGV[4], ${L.updatedAt}, ARGV[8] }
if ARGV[5] ~= '' then fields[#fields + 1] = ${L.positionTaskId}; fields[#fields + 1] = ARGV[5] end
if ARGV[6] ~= '' then fields[#fields + 1] = ${L.lastCompletedTaskId}; fields[#fields + 1] = ARGV[6] end
if ARGV[9] == '1' then fields[#fields + 1] = ${L.initialInput}; fields[#fields + 1] = ARGV[10] end
call('HSET', key, unpack(fields))
local n = #ARGV
for i = 13, n, 200 do
  local last = i + 199
  if last > n then last = n end
  call('HSET', key, unpack(ARGV, i, last))
end
call('ZADD', KEYS[3], 0, ARGV[1])
local ready = ARGV[7]
if ready == '' then ready = nil end
place(KEYS[2], KEYS[4], key, ARGV[1], ready, now_ms)
return OK
`;
