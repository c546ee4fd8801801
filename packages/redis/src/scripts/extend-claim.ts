import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** extendTaskClaim: the holder's live claim expires at now + duration. */
export const EXTEND_CLAIM = `--[[ extendTaskClaim
  KEYS[1] the instance hash   KEYS[2] the shard's ready set   KEYS[3] its lease set
  ARGV[1] task id   ARGV[2] worker id   ARGV[3] duration ms   ARGV[4] instance id
  A claim without ttl stays without ttl; an expired claim (a claim revoked by cancelWorkflow
  among them) is never revived; the heartbeat of a claim on a cancelled workflow fails (a claim
  taken after the cancel, or on a Cancelled snapshot written by saveSnapshot, which revokes
  nothing), judged on the status read in this same script.
  Returns {OK, token, claimedAt, expiresAt, paused ('1' when the snapshot is Paused, else '0')},
  or {CLAIM_NOT_FOUND}, {CLAIMED_BY_OTHER}, {CLAIM_EXPIRED} or {CLAIM_REVOKED} (cancelled),
  checked in that order.
]]
${PRELUDE}
local now_ms = clock()
local c = parse_claim(call('HGET', KEYS[1], ${L.claim} .. ARGV[1]))
if not c then return { CLAIM_NOT_FOUND } end
if c.worker ~= ARGV[2] then return { CLAIMED_BY_OTHER } end
if not is_live(c, now_ms) then return { CLAIM_EXPIRED } end
local status = call('HGET', KEYS[1], ${L.status})
if status == 'Cancelled' then return { CLAIM_REVOKED } end
if c.exp ~= '' then
  c.exp = fmt(now_ms + tonumber(ARGV[3]))
  call('HSET', KEYS[1], ${L.claim} .. ARGV[1], format_claim(c))
  reindex(base_of(KEYS[1], ARGV[4]), KEYS[1], ARGV[4], now_ms)
end
local paused = '0'
if status == 'Paused' then paused = '1' end
return { OK, c.token, c.at, c.exp, paused }
`;
