"""The ledger's one write script (router/finance/ledger.py runs it), kept apart so the
ledger module stays readable: what each KEYS/ARGV slot holds is documented in the script."""

WRITE_LUA = """
-- KEYS: 1 guard, 2 agg, 3 top, 4 latency list, 5 latency experts, 6 days (mode 'r' only).
-- Mode 'r' (one Redis): the guard is the record itself, written here with the day index.
-- Mode 's' (cluster): the guard is a marker in the team's slot; the record is written outside.
local mode, ttl = ARGV[1], tonumber(ARGV[2])
if mode == 'r' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ttl) then
  return 0
end
local cell = ARGV[3]
local top_cap = tonumber(ARGV[6])
local lat_cap = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local t = 9 + 2 * n
local request_id, cost, latency, expert = ARGV[t], ARGV[t + 1], ARGV[t + 2], ARGV[t + 3]
if mode == 'r' then
  redis.call('HSET', KEYS[1], unpack(ARGV, t + 4))
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[6], tonumber(ARGV[4]), ARGV[5])
end
for i = 0, n - 1 do
  local v = tonumber(ARGV[10 + 2 * i])
  if v ~= 0 then redis.call('HINCRBY', KEYS[2], cell .. ARGV[9 + 2 * i], v) end
end
redis.call('ZADD', KEYS[3], tonumber(cost), request_id)
if redis.call('ZCARD', KEYS[3]) > top_cap then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(top_cap + 1))
end
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('LPUSH', KEYS[4], latency)
redis.call('LTRIM', KEYS[4], 0, lat_cap - 1)
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('SADD', KEYS[5], expert)
redis.call('EXPIRE', KEYS[5], ttl)
return 1
"""
