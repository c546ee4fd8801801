import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { L } from "../layout.js";
import { FINISH } from "./finish.js";
import { CONTROL, PRELUDE } from "./lua.js";

/** cancelWorkflow: Cancelled, every claim revoked, out of every index, events dropped. */
export const CANCEL_WORKFLOW = `--[[ cancelWorkflow
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  KEYS[4] its timer set       KEYS[5] the instance's events hash   KEYS[6] its event order
  ARGV: see CONTROL (lua.ts); the new header is the kit's transitionHeader("cancel").
  Applies the new header when the instance is as read, then revokes every claim of the
  instance: a claim's expiry, live or lapsed, becomes the epoch (the kit's REVOKED_EXPIRY, ${REVOKED_EXPIRY}: no
  clock stepping back revives it; the record, its holder and its token stay, so later tokens
  keep growing, the holder's fenced writes and extends fail, and the holder may still release
  it). Deletes the position and lastCompletedTaskId fields, takes the
  instance out of the ready, lease and timer sets and drops its pending events. The workflow
  finishes here: its finish time ${L.finishedAt} = Redis's now (unless it has one: a finish is
  recorded once), filed in the shard's finish-time index.
  Returns OK, SNAPSHOT_NOT_FOUND or CHANGED (read again).
]]
${PRELUDE}${CONTROL}${FINISH}
local state = as_read()
if state then return state end
local now_ms = clock()
local claims = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, ${L.claimLength}) == ${L.claim} then claims[#claims + 1] = field end
end
local revoked_at = '${REVOKED_EXPIRY}'
for i = 1, #claims, 200 do
  local last = i + 199
  if last > #claims then last = #claims end
  local values = call('HMGET', key, unpack(claims, i, last))
  local revoked = {}
  for j = 1, last - i + 1 do
    local c = parse_claim(values[j])
    -- Live or lapsed: a claim nobody took over is revoked too (none is listed after a cancel).
    if c and c.exp ~= revoked_at then
      c.exp = revoked_at
      revoked[#revoked + 1] = claims[i + j - 1]; revoked[#revoked + 1] = format_claim(c)
    end
  end
  if #revoked > 0 then call('HSET', key, unpack(revoked)) end
end
apply()
call('HDEL', key, ${L.positionTask}, ${L.lastCompletedTaskId})
local base = base_of(key, id)
unindex(base, key, id)
if call('HSETNX', key, ${L.finishedAt}, fmt(now_ms)) == 1 then index_finish(base, id, fmt(now_ms)) end
call('DEL', KEYS[5], KEYS[6])
return OK
`;
