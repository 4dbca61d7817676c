-- Seed a document: create it at ARGV[1] if absent, then append the given
-- records that continue the head. Never overwrites: a record at a version the
-- log already holds must be the same op (client, seq), else "conflict"; and
-- records continue an existing head only where at least one of them was
-- matched in its log, or the log was created from the caller's history
-- (else the histories cannot be told apart: "conflict").
-- The epoch names the history: a document created here gets the fresh one
-- from ARGV[2] (a missing head means Redis lost it, or never had it, and the
-- caller cannot prove its store holds every record Redis handed out); an
-- existing one keeps its own (set from ARGV[2] if it predates epochs).
-- The log's byte total and the dedupe hash's bounds are kept as commit.lua
-- keeps them (bounds.lua is prepended).
-- KEYS: 1 head, 2 log, 3 clients, 4 durable, 5 epoch, 6 log bytes,
--       7 socket clients by version, 8 server-minted clients by version,
--       9 replicated head (a document created here starts replicated: its
--       records come from the store), 10 settle (commits wait while it
--       lives), 11 base epoch (the creating caller's epoch: the history its
--       starting version belongs to)
-- ARGV: 1 version, 2 fresh epoch, 3 retain, 4 retain bytes, 5 most socket
--       clients, 6 most server-minted clients, 7 n (client triples),
--       8 settle ms ('0' = none), 9 the caller's epoch, then
--       n x (client, seq, version), then record JSON strings in version
--       order
-- Settling: a document re-created from a live instance's copy (Redis lost
-- it, and every live instance still holds a prefix of the one history it
-- lost) refuses commits for ARGV[8] ms, so the other instances' seeds,
-- which only extend that prefix, land before any new record could take a
-- version one of them holds (which would make their seed conflict and
-- their copies of acknowledged records unusable).
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
  redis.call('SET', KEYS[11], ARGV[9])
  if tonumber(ARGV[8]) > 0 then
    redis.call('SET', KEYS[10], '1', 'PX', ARGV[8])
  end
else
  redis.call('SET', KEYS[5], ARGV[2], 'NX')
end
local epoch = redis.call('GET', KEYS[5])
local n = tonumber(ARGV[7])
local C = 10
local first = C + 3 * n
local len = redis.call('LLEN', KEYS[2])
-- Check every overlapping record before changing anything.
local checked, extends = 0, false
for j = first, #ARGV do
  local rec = cjson.decode(ARGV[j])
  local oldest = head - len
  if rec.version <= head and rec.version > oldest then
    local mine = cjson.decode(redis.call('LINDEX', KEYS[2], rec.version - oldest - 1))
    if mine.client ~= rec.client or mine.seq ~= rec.seq then
      return {'conflict'}
    end
    checked = checked + 1
  elseif rec.version == head + 1 then
    extends = true
  end
end
-- Records that would continue a head no record of ours was matched at
-- (the log holds none we hold) may belong to another history: refused,
-- unless the head is the document's start, or the log was created at a
-- version of our own history (the creator's epoch is ours: within one
-- epoch a version names one record).
if extends and not created and checked == 0 and head > 0
    and redis.call('GET', KEYS[11]) ~= ARGV[9] then
  return {'conflict'}
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
