import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** deleteSnapshot: the instance, its outputs, claims and events, out of every index. */
export const DELETE_SNAPSHOT = `--[[ deleteSnapshot
  KEYS[1] the instance hash   KEYS[2] the shard's ready set (the instance's queue's is built in Lua)   KEYS[3] its ids set
  KEYS[4] its token floor     KEYS[5] its lease set   KEYS[6] its timer set
  KEYS[7] the instance's events hash   KEYS[8] the instance's event order
  ARGV[1] instance id
  The highest token of the instance (in its claims and tombstones) is kept in the shard's floor,
  so a re-created instance never issues a token that an old claim already holds.
  Returns OK or SNAPSHOT_NOT_FOUND.
]]
${PRELUDE}
local key = KEYS[1]
if not exists(key) then return SNAPSHOT_NOT_FOUND end
local hi = floor_of(KEYS[4])
local claims = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, ${L.claimLength}) == ${L.claim} then claims[#claims + 1] = field end
end
for i = 1, #claims, 200 do
  local last = i + 199
  if last > #claims then last = #claims end
  for _, v in ipairs(call('HMGET', key, unpack(claims, i, last))) do
    local n = last_token(v)
    if n > hi then hi = n end
  end
end
call('SET', KEYS[4], fmt(hi))
unindex(base_of(key, ARGV[1]), key, ARGV[1])
call('DEL', key, KEYS[7], KEYS[8])
call('ZREM', KEYS[3], ARGV[1])
return OK
`;
