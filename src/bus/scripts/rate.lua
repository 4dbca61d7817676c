-- One unit of a rate limit's allowance, shared by every instance (GCRA).
-- KEYS[1]: the limit's key; it holds the theoretical arrival time (ms,
-- Redis's clock) and expires once the allowance is full again.
-- ARGV[1]: ms for one unit to come back; ARGV[2]: units held at most.
-- Returns 1 (taken) or 0 (none left).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
if tat - now > per * (burst - 1) then
  return 0
end
tat = tat + per
redis.call('SET', KEYS[1], tat, 'PX', tat - now)
return 1
