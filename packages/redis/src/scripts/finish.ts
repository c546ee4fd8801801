import { L } from "../layout.js";

/*
 * Lua shared by the scripts that finish, delete and purge instances (after PRELUDE): the
 * finish-time index `{P:K}:done` of a shard (score = finish time, member = instance id) and the
 * deletion of one instance with everything it owns. Keys are built from the shard's base
 * "{P:K}:", so they share the instance's slot.
 */
export const FINISH = `
-- Files a finished instance in its shard's finish-time index at \`at\` (ms string), the time
-- kept in its field ${L.finishedAt}: ZADD of the same score again changes nothing.
local function index_finish(base, id, at)
  call('ZADD', base .. ${L.done}, at, id)
end
-- Deletes one existing instance as deleteSnapshot does: the highest token of its claims and
-- tombstones raises the shard's floor (a re-created instance never issues a token an old claim
-- holds), it leaves every index (ready, lease, timer, ids and finish-time sets), and its hash
-- (snapshot, outputs, claims) and pending events go.
local function drop_instance(base, key, id)
  local floor_key = base .. ${L.floor}
  local hi = floor_of(floor_key)
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
  call('SET', floor_key, fmt(hi))
  unindex(base, key, id)
  call('DEL', key, base .. ${L.events} .. id, base .. ${L.eventOrder} .. id)
  call('ZREM', base .. ${L.ids}, id)
  call('ZREM', base .. ${L.done}, id)
end
`;
