import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** claimTask: a new claim on one task unless a live one exists. */
export const CLAIM_TASK = `--[[ claimTask
  KEYS[1] the instance hash   KEYS[2] the shard's token floor   KEYS[3] its ready set
  KEYS[4] its lease set
  ARGV[1] task id   ARGV[2] worker id   ARGV[3] ttl ms ('' = never expires)
  ARGV[4] instance id   ARGV[5] request id (hex, one per call)
  A takeover here does not count a run in the task's attempts (claim-next's does): the fencing
  conformance group requires a takeover by claimTask to leave the snapshot as it was.
  Returns nil when a live claim exists, else {token, claimedAt, expiresAt}. Idempotent per
  request id: run again (its first reply lost), it returns the claim its first run made.
]]
${PRELUDE}
-- A claim path: nothing it files is newly claimable by others (see wake in lua.ts).
woken = false
local now_ms, now_us = clock()
local raw = call('HGET', KEYS[1], ${L.claim} .. ARGV[1])
local c = parse_claim(raw)
if own_retry(c, ARGV[5], ARGV[2], now_ms) then return { c.token, c.at, c.exp } end
if is_live(c, now_ms) then return false end
local tok, at, exp = new_claim(KEYS[1], ARGV[1], raw, floor_of(KEYS[2]), ARGV[2], ARGV[3], ARGV[5], now_ms, now_us)
reindex(base_of(KEYS[1], ARGV[4]), KEYS[1], ARGV[4], now_ms)
return { tok, at, exp }
`;
