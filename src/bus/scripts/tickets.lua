-- Single-use WebSocket tickets every instance can redeem.
-- KEYS: 1 tickets (hash key -> value), 2 expiries (sorted set key -> expiry ms)
-- ARGV: 1 action ('put' | 'take'), 2 key, 3 now (ms);
--   put: 4 value, 5 expiry (ms), 6 cap (live tickets at most)
-- put returns 1 (kept) or 0 (at the cap); take returns the value or false.
local action, key, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if action == 'put' then
  -- Sweep expired tickets (a bounded number per call; the rest next time).
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('HDEL', KEYS[1], unpack(old))
    redis.call('ZREM', KEYS[2], unpack(old))
  end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
    return 0
  end
  redis.call('HSET', KEYS[1], key, ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[5], key)
  return 1
end
local expiry = tonumber(redis.call('ZSCORE', KEYS[2], key))
local value = redis.call('HGET', KEYS[1], key)
redis.call('HDEL', KEYS[1], key)
redis.call('ZREM', KEYS[2], key)
if not value or not expiry or expiry <= now then
  return false
end
return value
