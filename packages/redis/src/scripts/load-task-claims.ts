import { REVOKED_EXPIRY } from "@sayiir/persistence-core/adapter";
import { L } from "../layout.js";
import { PRELUDE } from "./lua.js";

/** loadTaskClaims: every claim record of the instance that is neither released nor revoked. */
export const LOAD_TASK_CLAIMS = `--[[ loadTaskClaims
  KEYS[1] the instance hash
  Reads the claim fields (${"c:"} .. task id) of the hash, by name (HKEYS, then HMGET of those
  only: no output is read). A claim is "token|claimedAt|expiresAt|requestId|workerId"; released
  and completed ones are tombstones (a bare token, "token|requestId") and are skipped, as are
  the claims a cancel revoked (expiry ${REVOKED_EXPIRY}, the kit's REVOKED_EXPIRY). Live and expired
  claims are listed: an expired claim nobody took over is stuck work. Read-only.
  Returns flat {task id, token, claimedAt, expiresAt ('' = never), workerId, ...}, in hash order.
]]
${PRELUDE}
local key = KEYS[1]
local fields = {}
for _, field in ipairs(call('HKEYS', key)) do
  if string.sub(field, 1, ${L.claimLength}) == ${L.claim} then fields[#fields + 1] = field end
end
local out = {}
for i = 1, #fields, 200 do
  local last = i + 199
  if last > #fields then last = #fields end
  local values = call('HMGET', key, unpack(fields, i, last))
  for j = 1, last - i + 1 do
    local c = parse_claim(values[j])
    if c and c.exp ~= '${REVOKED_EXPIRY}' then
      for _, v in ipairs({ string.sub(fields[i + j - 1], ${L.claimLength} + 1), c.token, c.at, c.exp, c.worker }) do
        out[#out + 1] = v
      end
    end
  end
end
return out
`;
