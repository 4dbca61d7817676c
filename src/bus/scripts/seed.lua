-- Seed a document: create it at ARGV[1] if absent, then append the given
-- records that continue the head. Never overwrites: a record at a version the
-- log already holds must be the same op (client, seq), else "conflict".
-- The epoch names the history: a document created here gets the fresh one
-- from ARGV[2] (a missing head means Redis lost it, or never had it, and the
-- caller cannot prove its store holds every record Redis handed out); an
-- existing one keeps its own (set from ARGV[2] if it predates epochs).
-- The log's byte total and the dedupe hash's bounds are kept as commit.lua
-- keeps them (bounds.lua is prepended).
-- KEYS: 1 head, 2 log, 3 clients, 4 durable, 5 epoch, 6 log bytes,
--       7 socket clients by version, 8 server-minted clients by version,
--       9 replicated head (a document created here starts replicated: its
--       records come from the store)
-- ARGV: 1 version, 2 fresh epoch, 3 retain, 4 retain bytes, 5 most socket
--       clients, 6 most server-minted clients, 7 n (client triples), then
--       n x (client, seq, version), then record JSON strings in version order
-- Returns {"ok", head, epoch} | {"conflict"}
local head = tonumber(redis.call('GET', KEYS[1]))
local created = not head
if created then
  head = tonumber(ARGV[1])
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[6], '0')
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[4], ARGV[1])
  redis.call('SET', KEYS[5], ARGV[2])
else
  redis.call('SET', KEYS[5], ARGV[2], 'NX')
end
local epoch = redis.call('GET', KEYS[5])
local n = tonumber(ARGV[7])
local C = 8
local first = C + 3 * n
local len = redis.call('LLEN', KEYS[2])
-- Check every overlapping record before changing anything.
for j = first, #ARGV do
  local rec = cjson.decode(ARGV[j])
  local oldest = head - len
  if rec.version <= head and rec.version > oldest then
    local mine = cjson.decode(redis.call('LINDEX', KEYS[2], rec.version - oldest - 1))
    if mine.client ~= rec.client or mine.seq ~= rec.seq then
      return {'conflict'}
    end
  end
end
local bytes = log_bytes(KEYS[2], KEYS[6])
for j = first, #ARGV do
  local rec = cjson.decode(ARGV[j])
  if rec.version == head + 1 then
    redis.call('RPUSH', KEYS[2], ARGV[j])
    bytes = bytes + string.len(ARGV[j])
    head = rec.version
  end
end
redis.call('SET', KEYS[1], string.format('%d', head))
if created then
  redis.call('SET', KEYS[9], string.format('%d', head))
end
trim_log(KEYS[2], KEYS[6], KEYS[4], head, redis.call('LLEN', KEYS[2]), bytes,
  tonumber(ARGV[3]), tonumber(ARGV[4]))
for i = C, first - 1, 3 do
  local c, s = ARGV[i], tonumber(ARGV[i + 1])
  local v = tonumber(ARGV[i + 2])
  if v <= head then
    local cur = redis.call('HGET', KEYS[3], c)
    if (not cur) or tonumber(string.match(cur, '^(%d+):')) < s then
      client_seen(KEYS[3], KEYS[7], KEYS[8], c, ARGV[i + 1], ARGV[i + 2])
    end
  end
end
bound_clients(KEYS[3], KEYS[7], tonumber(ARGV[5]))
bound_clients(KEYS[3], KEYS[8], tonumber(ARGV[6]))
return {'ok', string.format('%d', head), epoch}
