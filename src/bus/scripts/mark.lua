-- Wait mode: before a WAIT that is to cover a document's whole log, write
-- something (so the WAIT covers this point of the replication stream,
-- whoever wrote the records before it) and read the head it covers.
-- KEYS: 1 head, 2 mark
-- Returns the head, or false if the document is unknown.
local head = redis.call('GET', KEYS[1])
if head then
  redis.call('SET', KEYS[2], head)
end
return head
