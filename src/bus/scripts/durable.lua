-- Record that a snapshot at ARGV[1] is durable (only ever moves forward).
-- KEYS: 1 durable, 2 head (must exist: no resurrecting a lost document)
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
