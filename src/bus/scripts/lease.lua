-- A document's commit lease: the one instance allowed to commit its rounds
-- (commit.lua checks the token it is given against KEYS[1]).
-- KEYS: 1 lease (string with PX: the token), 2 term (INCR counter)
-- ARGV: 1 action ('acquire' | 'renew' | 'release'), 2 acquire:
--       '<instance>:<nonce>' (the nonce makes the token unique even when
--       the term restarts after Redis lost its data); renew, release: the
--       token held, 3 lease ms, 4 publish command ('' = none), 5 channel
-- Returns one of:
--   {"granted", token}        acquire: the token is '<term>:' .. ARGV[2]
--   {"held", token, pttl}     acquire: someone holds it for pttl ms more
--   {"renewed"}               renew: still ours, extended
--   {"lost", current}         renew, release: not ours ('' = nobody's)
--   {"released"}              release: it was ours and is gone
local action, ms = ARGV[1], tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
local function tell(token, term)
  if ARGV[4] ~= '' then
    redis.call(ARGV[4], ARGV[5], cjson.encode({kind = 'leader', token = token, term = term}))
  end
end
if action == 'acquire' then
  if current then
    return {'held', current, string.format('%d', redis.call('PTTL', KEYS[1]))}
  end
  local term = redis.call('INCR', KEYS[2])
  local token = string.format('%d', term) .. ':' .. ARGV[2]
  redis.call('SET', KEYS[1], token, 'PX', ms)
  tell(token, term)
  return {'granted', token}
end
if current ~= ARGV[2] then
  return {'lost', current or ''}
end
if action == 'renew' then
  redis.call('PEXPIRE', KEYS[1], ms)
  return {'renewed'}
end
redis.call('DEL', KEYS[1])
tell('', tonumber(redis.call('GET', KEYS[2])) or 0)
return {'released'}
