"""The Lua scripts that make every multi-key write atomic on the Redis server.

Key layout of a table (every key carries the hash tag ``{table}``, so Redis Cluster keeps a
table in one slot and the scripts may touch all of its keys):

``{table}:s:<id>``
    a string: the session's record exactly as :func:`sessionkeeper.encode_session` writes it
    (``GET`` it and :func:`sessionkeeper.decode_session` reads it). Its TTL is
    ``timeout_ms + ttl_margin_ms`` from the last write, so Redis drops forgotten sessions by
    itself; a session that never expires has no TTL.
``{table}:ids``
    a sorted set of every stored id, all with score 0: ordered by id, for ``list`` and for
    ``iter_sessions`` in pages (each id exactly once, in bounded memory).
``{table}:exp``
    a sorted set of the ids that can expire, scored by their deadline
    ``last_accessed + timeout_ms``: ``count`` and ``cleanup_expired`` read only what expired.

A touch rewrites ``last_accessed`` inside the record on the server: the script finds the field in
the version-1 msgpack record (``[1, id, created_at, last_accessed, timeout_ms, metadata]``) and
splices in the new value, which the client sends already encoded. msgpack writes a non-negative
integer in its shortest form and every longer form starts with a larger byte, so comparing the
encodings byte by byte compares the numbers exactly, up to the codec's limit of 2**63 - 1.
Deadlines are sorted-set scores (doubles): exact up to 2**53 ms, the year 287,396.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["COUNT", "DELETE", "EXPIRE_PAGE", "LIST_PAGE", "SCRIPTS", "STORE", "TOUCH", "Script"]


class Script:
    """One Lua script and its SHA1 (what ``EVALSHA`` names)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


#: KEYS: session key, ids, exp. ARGV: id, record, deadline ('' = never), ttl ('' = no TTL).
#: Replaces whatever the key held.
STORE: Final = Script(
    "store",
    """
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 1
""",
)

#: KEYS: session key, exp. ARGV: id, new last_accessed msgpack-encoded, the same in decimal,
#: ttl margin, largest TTL. Returns nil when the session is gone (it is never recreated), else
#: the record as now stored.
TOUCH: Final = Script(
    "touch",
    """
local record = redis.call('GET', KEYS[1])
if not record then return false end
local function damaged(why)
  return redis.error_reply('DAMAGED session record: ' .. why)
end
local function uint_length(byte)
  if not byte then return nil end
  if byte <= 0x7f then return 1 end
  if byte == 0xcc then return 2 end
  if byte == 0xcd then return 3 end
  if byte == 0xce then return 5 end
  if byte == 0xcf then return 9 end
  return nil
end
if string.byte(record, 1) ~= 0x96 or string.byte(record, 2) ~= 0x01 then
  return damaged('not a version 1 record')
end
local head = string.byte(record, 3)
local at
if head and head >= 0xa0 and head <= 0xbf then
  at = 4 + head - 0xa0
elseif head == 0xd9 then
  at = 5 + (string.byte(record, 4) or 0)
elseif head == 0xda then
  at = 6 + (string.byte(record, 4) or 0) * 256 + (string.byte(record, 5) or 0)
else
  return damaged('the id is not a msgpack string')
end
local created = uint_length(string.byte(record, at))
if not created then return damaged('created_at is not an unsigned integer') end
at = at + created
local length = uint_length(string.byte(record, at))
if not length then return damaged('last_accessed is not an unsigned integer') end
if at + length > #record then return damaged('the record ends inside last_accessed') end
local old = string.sub(record, at, at + length - 1)
local new = ARGV[2]
local newer = false
for i = 1, math.min(#new, #old) do
  local a, b = string.byte(new, i), string.byte(old, i)
  if a ~= b then
    newer = a > b
    break
  end
end
if not newer then return record end
local after = at + length
local timeout = nil
local tag = string.byte(record, after)
if tag ~= 0xc0 then
  local size = uint_length(tag)
  if not size then return damaged('timeout_ms is neither nil nor an unsigned integer') end
  if after + size > #record then return damaged('the record ends inside timeout_ms') end
  if size == 1 then
    timeout = tag
  else
    timeout = 0
    for i = after + 1, after + size - 1 do
      timeout = timeout * 256 + string.byte(record, i)
    end
  end
end
record = string.sub(record, 1, at - 1) .. new .. string.sub(record, after)
local ttl = timeout and timeout + tonumber(ARGV[4])
if ttl and ttl <= tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], record, 'PX', ttl)
else
  redis.call('SET', KEYS[1], record, 'KEEPTTL')
end
if timeout then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + timeout, ARGV[1])
end
return record
""",
)

#: KEYS: session key, ids, exp. ARGV: id. Returns 1 when a session was stored, else 0.
DELETE: Final = Script(
    "delete",
    """
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
""",
)

#: KEYS: ids, exp, then the key of each session. ARGV: now, then the id of each session.
#: Removes each session whose deadline is still before ``now`` (a store or touch since it was
#: listed may have moved it). Returns {removed, dropped}: sessions deleted, and sessions whose
#: index entries were all that was left (Redis had already dropped the key through its TTL).
EXPIRE_PAGE: Final = Script(
    "expire_page",
    """
local now = tonumber(ARGV[1])
local removed, dropped = 0, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if deadline and tonumber(deadline) < now then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    if redis.call('DEL', KEYS[i + 1]) == 1 then
      removed = removed + 1
    else
      dropped = dropped + 1
    end
  end
end
return {removed, dropped}
""",
)

#: KEYS: ids, exp. ARGV: start ('-' or '(' .. last id), page size, now.
#: Returns {last id of the page or nil, {ids of the page live at now}}.
LIST_PAGE: Final = Script(
    "list_page",
    """
local page = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local now = tonumber(ARGV[3])
local live = {}
for _, id in ipairs(page) do
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if not deadline or tonumber(deadline) >= now then live[#live + 1] = id end
end
return {page[#page] or false, live}
""",
)

#: KEYS: ids, exp. ARGV: now. Sessions stored less those whose deadline is before ``now``.
COUNT: Final = Script(
    "count",
    """
return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[1])
""",
)

#: Every script, for ``SCRIPT LOAD`` after a server lost its script cache.
SCRIPTS: Final = (STORE, TOUCH, DELETE, EXPIRE_PAGE, LIST_PAGE, COUNT)
