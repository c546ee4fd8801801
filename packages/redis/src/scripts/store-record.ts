import { L } from "../layout.js";

/** The store record: the shard count, recorded on first use (see schema.ts). */
export const STORE_RECORD = `--[[ storeRecord
  KEYS[1] the store record "{P:layout}"
  ARGV[1] shard count given in the options ('' = none)   ARGV[2] default count
  ARGV[3] former default count   ARGV[4..] keys whose existence shows a store written with the
  former default before the record existed
  Returns the shard count of the store, recording it on first use.
]]
local stored = redis.call('HGET', KEYS[1], ${L.shards})
if stored then return stored end
local n = ARGV[1]
if n == '' then
  n = ARGV[2]
  for i = 4, #ARGV do
    if redis.call('EXISTS', ARGV[i]) == 1 then
      n = ARGV[3]
      break
    end
  end
end
redis.call('HSET', KEYS[1], ${L.shards}, n)
return n
`;
