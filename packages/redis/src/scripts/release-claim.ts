import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** releaseTaskClaim: the holder's claim becomes a bare-token tombstone. */
export const RELEASE_CLAIM = `--[[ releaseTaskClaim
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  ARGV[1] task id   ARGV[2] worker id   ARGV[3] instance id
  The holder may release its own expired claim that nobody took over.
  Returns OK, CLAIM_NOT_FOUND or CLAIMED_BY_OTHER.
]]
${PRELUDE}
local c = parse_claim(call('HGET', KEYS[1], ${L.claim} .. ARGV[1]))
if not c then return CLAIM_NOT_FOUND end
if c.worker ~= ARGV[2] then return CLAIMED_BY_OTHER end
call('HSET', KEYS[1], ${L.claim} .. ARGV[1], c.token)
reindex(base_of(KEYS[1], ARGV[3]), KEYS[1], ARGV[3], clock())
return OK
`;
