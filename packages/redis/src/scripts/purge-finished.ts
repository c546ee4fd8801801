import { L } from "../layout.js";
import { FINISH } from "./finish.js";
import { PRELUDE } from "./lua.js";

/** purgeFinished's read: the oldest entries of the finish-time indexes of some shards. */
export const PEEK_FINISHED = `--[[ peekFinished (the read of purgeFinished)
  KEYS[1] the finish-time index of the first shard (routing only)
  ARGV[1] "{P:"   ARGV[2] finishedBefore (epoch ms)   ARGV[3] how many per shard
  ARGV[4..] the shards
  Per shard, its first ARGV[3] entries of the finish-time index "{P:K}:done" with a finish
  time strictly before ARGV[2], oldest first (ties by id, byte order). Read-only.
  Returns flat {shard, instance id, finish time, ...}.
]]
local out = {}
for i = 4, #ARGV do
  local s = ARGV[i]
  local page = redis.call('ZRANGEBYSCORE', ARGV[1] .. s .. ${L.tagEnd} .. ${L.done}, '-inf', '(' .. ARGV[2],
    'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
  for j = 1, #page, 2 do
    out[#out + 1] = s; out[#out + 1] = page[j]; out[#out + 1] = page[j + 1]
  end
end
return out
`;

/** purgeFinished: the deletion of the instances it picked, each as deleteSnapshot deletes one. */
export const PURGE_FINISHED = `--[[ purgeFinished
  KEYS[1] the finish-time index of the first shard (routing only)
  ARGV[1] "{P:"   ARGV[2] finishedBefore (epoch ms)
  ARGV[3..] (shard, instance id) pairs, in the order to delete them (oldest finish first)
  Per pair, judged as it stands now (another client may have purged, deleted, re-created or
  finished it since it was read): an instance that is finished, with a finish time (its field
  ${L.finishedAt}, else its index score) strictly before ARGV[2], is deleted by drop_instance,
  exactly as deleteSnapshot deletes it (claims, tombstones into the shard's token floor; outputs,
  events, every index entry). One not in the index any more (purged or deleted meanwhile) is
  skipped, uncounted; an index entry of an instance that is not finished (a stale one) leaves
  the index; one finished at or after the cut-off is filed again at its finish time.
  Returns how many instances it deleted.
]]
${PRELUDE}${FINISH}
local pre, before = ARGV[1], tonumber(ARGV[2])
local deleted = 0
for i = 3, #ARGV - 1, 2 do
  local base, id = pre .. ARGV[i] .. ${L.tagEnd}, ARGV[i + 1]
  local score = call('ZSCORE', base .. ${L.done}, id)
  if score then
    local key = base .. ${L.instance} .. id
    local v = call('HMGET', key, ${L.finished}, ${L.finishedAt})
    if v[1] ~= '1' then
      call('ZREM', base .. ${L.done}, id)
    elseif tonumber(v[2] or score) < before then
      drop_instance(base, key, id)
      deleted = deleted + 1
    else
      index_finish(base, id, v[2] or score)
    end
  end
end
return deleted
`;
