-- Read a document's presence set (members scored by expiry, ms) and reap the
-- expired entries. Each expired entry is returned to exactly one caller (the
-- one whose ZREM removed it), which announces that it left.
-- KEYS: 1 presence zset. ARGV: 1 now_ms
-- Returns {live..., "--", reaped...}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
table.insert(live, '--')
for _, m in ipairs(expired) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    table.insert(live, m)
  end
end
return live
