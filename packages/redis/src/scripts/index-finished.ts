import { L } from "../layout.js";

/** The migration that files instances finished before the finish-time index existed. */
export const INDEX_FINISHED = `--[[ indexFinished (migration; see retention.ts)
  KEYS[1] the shard's ids set
  ARGV[1] the shard's base "{P:K}:"   ARGV[2] the last id of the previous page ('' = start)
  ARGV[3] page size
  Walks one page of the shard's ids (by id, after ARGV[2]). A finished instance (Completed,
  Failed, Cancelled) without a finish time gets its updatedAt (0 when it has none) as its
  finish time: field ${L.finishedAt} and the shard's finish-time index. Instances that have one are left as they are.
  Returns {ids walked, the last id walked ('' = none)}.
]]
local call = redis.call
local base = ARGV[1]
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local ids = call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = base .. ${L.instance} .. id
  local v = call('HMGET', key, ${L.finished}, ${L.finishedAt}, ${L.updatedAt})
  if v[1] == '1' and not v[2] then
    local at = v[3] or '0'
    call('HSET', key, ${L.finishedAt}, at)
    call('ZADD', base .. ${L.done}, at, id)
  end
end
return { #ids, ids[#ids] or '' }
`;
