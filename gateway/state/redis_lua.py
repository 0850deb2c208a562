"""The Lua scripts behind the Redis counters (gateway.state.redis_counters): admission and settlement.

Each runs atomically in Redis, so an admission checks and reserves every limit of a request in one
round trip, and a batch of settlements (plus this replica's heartbeat) is one round trip as well.
Keys per check, in check order: a bucket hash (`requests`, `tokens`: level and when it was set), a
holds sorted set (`concurrency`: one member per request in flight, scored by when it stops counting),
or a totals hash (`spent`, `reserved`) and a holds sorted set (`spend`: members `grant|amount`).
Numbers cross as text ("%.17g"; a Lua number returned to Redis would be cut to an integer), packed
into one space-separated string each way: parsing one reply instead of four per check is most of
what the client spends on a call.
"""

from __future__ import annotations

_COMMON = """
local function num(x) return string.format('%.17g', x) end

-- The per-check (or per-operation) fields arrive as one space-separated string: one argument to encode
-- and send instead of five per check.
local function fields(packed)
  local out = {}
  for word in string.gmatch(packed, '%S+') do out[#out + 1] = word end
  return out
end

-- Holds of requests that never settled (their replica died) stop counting at their expiry.
local function expire_holds(holds, totals, now)
  local gone = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #gone == 0 then return end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  if totals then
    local back = 0
    for _, member in ipairs(gone) do back = back + tonumber(string.match(member, '|([^|]*)$')) end
    redis.call('HINCRBYFLOAT', totals, 'reserved', -back)
  end
end

-- Keep a key of holds until its last hold expires (and a minute more), never shorter.
local function keep_until(key, expires, now)
  local ms = math.ceil((expires - now) * 1000) + 60000
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

# ARGV: now, grant id, and per check (packed): kind, limit, amount, expires, ttl (seconds a spend total is kept;
# 0: always). Returns (packed) granted 0/1, refused index or -1, retry_after, then per check: used, remaining,
# reset seconds, spent (settled spend: spend checks only).
ADMIT = _COMMON + """
local now = tonumber(ARGV[1])
local grant = ARGV[2]
local F = fields(ARGV[3])
local n = #F / 5
local result = {0, -1, '0'}
local levels = {}
local refused, retry = -1, 0
local k = 1
for i = 1, n do
  local a = (i - 1) * 5
  local kind, limit, amount = F[a + 1], tonumber(F[a + 2]), tonumber(F[a + 3])
  local used, reset, wait, spent = 0, 0, nil, 0
  if kind == 'requests' or kind == 'tokens' then
    local rate = limit / 60
    local state = redis.call('HMGET', KEYS[k], 'level', 'at')
    local level = 0
    if state[1] then level = math.max(0, tonumber(state[1]) - (now - tonumber(state[2])) * rate) end
    levels[i] = level
    local over = level + math.min(amount, limit) - limit
    if over <= 0 then used = level + amount else used = level end
    if rate > 0 then reset = used / rate end
    if over > 0 then
      if rate > 0 then wait = over / rate else wait = 60 end
    end
    k = k + 1
  elseif kind == 'concurrency' then
    expire_holds(KEYS[k], nil, now)
    local count = redis.call('ZCARD', KEYS[k])
    if count + amount <= limit then used = count + amount else used = count; wait = 0 end
    k = k + 1
  else
    expire_holds(KEYS[k + 1], KEYS[k], now)
    local totals = redis.call('HMGET', KEYS[k], 'spent', 'reserved')
    spent = tonumber(totals[1]) or 0
    local current = spent + math.max(0, tonumber(totals[2]) or 0)
    if current < limit then used = current + amount else used = current; wait = 0 end
    k = k + 2
  end
  if wait and refused < 0 then refused, retry = i - 1, wait end
  table.insert(result, num(used))
  table.insert(result, num(math.max(0, limit - used)))
  table.insert(result, num(reset))
  table.insert(result, num(spent))
end
result[2] = refused
result[3] = num(retry)
if refused >= 0 then return table.concat(result, ' ') end
result[1] = 1
k = 1
for i = 1, n do
  local a = (i - 1) * 5
  local kind, limit, amount = F[a + 1], tonumber(F[a + 2]), tonumber(F[a + 3])
  local expires, ttl = tonumber(F[a + 4]), tonumber(F[a + 5])
  if kind == 'requests' or kind == 'tokens' then
    local level = levels[i] + amount
    redis.call('HSET', KEYS[k], 'level', num(level), 'at', ARGV[1])
    local rate = limit / 60
    if rate > 0 then redis.call('PEXPIRE', KEYS[k], math.ceil(level / rate * 1000) + 1000) end
    k = k + 1
  elseif kind == 'concurrency' then
    redis.call('ZADD', KEYS[k], expires, grant)
    keep_until(KEYS[k], expires, now)
    k = k + 1
  else
    redis.call('HINCRBYFLOAT', KEYS[k], 'reserved', F[a + 3])
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    redis.call('ZADD', KEYS[k + 1], expires, grant .. '|' .. F[a + 3])
    keep_until(KEYS[k + 1], expires, now)
    k = k + 2
  end
end
return table.concat(result, ' ')
"""

# KEYS[1]: the replica registry, KEYS[2]: the epoch marker, then each operation's keys as in ADMIT.
# ARGV: replica id, seconds after which a silent replica is gone, and per operation (packed): kind, amount,
# actual, grant (`-` for none), ttl. Kinds: tokens, concurrency, spend (as admitted), `floor` (raise a spend
# total to at least `actual`: a Redis that restarted empty is re-seeded from what replicas last saw) and `add`
# (spend settled while Redis was down). Returns (packed) live replicas, 1 if the epoch marker was missing
# (Redis lost its data), then the settled spend of each spend/floor/add operation after it, in order.
SETTLE = _COMMON + """
local t = redis.call('TIME')
local clock = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dead_after = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], clock, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', clock - dead_after)
redis.call('PEXPIRE', KEYS[1], math.ceil(dead_after * 1000) * 2)
local fresh = 0
if redis.call('SET', KEYS[2], '1', 'NX') then fresh = 1 end
local F = fields(ARGV[3])
local n = #F / 5
local k = 3
local result = {0, fresh}
for i = 1, n do
  local a = (i - 1) * 5
  local kind, amount, actual = F[a + 1], tonumber(F[a + 2]), tonumber(F[a + 3])
  local grant, ttl = F[a + 4], tonumber(F[a + 5])
  if kind == 'tokens' then
    if actual ~= amount and redis.call('EXISTS', KEYS[k]) == 1 then
      local level = tonumber(redis.call('HINCRBYFLOAT', KEYS[k], 'level', num(actual - amount)))
      if level < 0 then redis.call('HSET', KEYS[k], 'level', '0') end
    end
    k = k + 1
  elseif kind == 'concurrency' then
    redis.call('ZREM', KEYS[k], grant)
    k = k + 1
  else
    if kind == 'spend' and redis.call('ZREM', KEYS[k + 1], grant .. '|' .. F[a + 2]) == 1 then
      redis.call('HINCRBYFLOAT', KEYS[k], 'reserved', num(-amount))
    end
    if kind == 'floor' then
      if (tonumber(redis.call('HGET', KEYS[k], 'spent')) or 0) < actual then
        redis.call('HSET', KEYS[k], 'spent', F[a + 3])
      end
    elseif actual ~= 0 then
      redis.call('HINCRBYFLOAT', KEYS[k], 'spent', F[a + 3])
    end
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    table.insert(result, redis.call('HGET', KEYS[k], 'spent') or '0')
    k = k + 2
  end
end
result[1] = redis.call('ZCARD', KEYS[1])
return table.concat(result, ' ')
"""
