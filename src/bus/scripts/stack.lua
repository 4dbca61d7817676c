-- Per-user undo/redo stacks of one document: a hash with one field per user
-- and stack ('u:<user>' / 'r:<user>'), each a JSON array of entry strings,
-- newest last. The same rules as tandem_core::undo::Stacks. Prepended to
-- undo.lua and commit.lua when they are loaded (one copy of these rules).
local function stack_load(hash, field)
  local raw = redis.call('HGET', hash, field)
  if not raw then
    return {}
  end
  return cjson.decode(raw)
end

local function stack_store(hash, field, list)
  if #list == 0 then
    redis.call('HDEL', hash, field)
  else
    redis.call('HSET', hash, field, cjson.encode(list))
  end
end

-- Push `entry` on `field`, or replace the top if the top's version is `at`
-- ('' = never; when the top is another, `fallback` is pushed instead unless
-- it is ''); keep at most `limit` entries and `max_bytes` bytes of them
-- (the oldest go first, the newest stays); then clear the field `clear`
-- ('' = none).
local function stack_push(hash, field, entry, at, limit, clear, max_bytes, fallback)
  local list = stack_load(hash, field)
  local top = list[#list]
  if at ~= '' and top and cjson.decode(top).version == tonumber(at) then
    list[#list] = entry
  elseif fallback ~= '' then
    table.insert(list, fallback)
  else
    table.insert(list, entry)
  end
  while #list > limit do
    table.remove(list, 1)
  end
  local bytes = 0
  for _, e in ipairs(list) do
    bytes = bytes + #e
  end
  while bytes > max_bytes and #list > 1 do
    bytes = bytes - #list[1]
    table.remove(list, 1)
  end
  stack_store(hash, field, list)
  if clear ~= '' then
    redis.call('HDEL', hash, clear)
  end
end
