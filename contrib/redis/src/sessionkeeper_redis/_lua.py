"""The Lua the scripts of :mod:`sessionkeeper_redis._scripts` share: the record parser
(:data:`PARSE`) and the index writes (:data:`INDEX`), prepended to each script that needs them
(a script cannot import), or defined once in a Redis 7 function library.

The record formats the parser reads: format 1 ``[1, id, created_at, last_accessed, timeout_ms,
metadata]`` (written before issue 14) and format 2 ``[2, id, created_at, last_accessed,
timeout_ms, metadata, version, owner, absolute_timeout_ms]``, where the metadata is one msgpack
``bin``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BIND", "INDEX", "PARSE"]

#: The line of :data:`PARSE` that binds the string functions: a script runs it on every call; a
#: function library may not read ``string`` while it loads, so its function binds them per call.
BIND: Final = "local byte, sub = string.byte, string.sub\n"


#: Lua shared by the scripts that read a record. ``scan(record, id)`` checks a record and returns
#: its fields as values, no table (a table per record cost the store script about 0.5 us): ``id,
#: format, deadline, last, meta_end, version, owner_at, owner, created_at, created, last_at,
#: timeout_at, timeout, abs`` (``deadline``: the earliest deadline, nil for never; ``*_at``: where
#: a field's encoding starts; ``meta_end``: where the metadata ends, so where format 2's version
#: starts), or ``nil`` and what is wrong (a record of another id is damage too; with ``id`` nil,
#: any id is taken and returned). The metadata is skipped through its length, never read.
#: ``parse(record, id)`` is the same as a table (``f.id``, ``f.last``, ...) for the scripts that
#: change fields of the record (touch, take, rotate); ``expires(f)`` its earliest deadline.
#: ``next_version(v)`` the encoding of the version after the one encoded ``v`` (versions are
#: kept as their msgpack encodings: exact beyond 2**53; ``nil`` past the codec's 2**63 - 1);
#: ``damaged(why)`` the error the client turns into a ``StorageError`` naming the key.
PARSE: Final = """
local function damaged(why)
  return redis.error_reply('DAMAGED session record: ' .. why)
end
local byte, sub = string.byte, string.sub
local function uint(r, i)
  local b, a, c, d, e, g, h, k, l = byte(r, i, i + 8)
  if not b then return nil end
  if b <= 0x7f then return b, i + 1 end
  if b == 0xcc then
    if a then return a, i + 2 end
  elseif b == 0xcd then
    if c then return a * 256 + c, i + 3 end
  elseif b == 0xce then
    if e then return ((a * 256 + c) * 256 + d) * 256 + e, i + 5 end
  elseif b == 0xcf then
    if l then
      return ((((((a * 256 + c) * 256 + d) * 256 + e) * 256 + g) * 256 + h) * 256 + k) * 256 + l,
        i + 9
    end
  end
  return nil
end
local function str_at(r, i)
  local b, x, y, w, z = byte(r, i, i + 4)
  local e
  if not b then return nil end
  if b >= 0xa0 and b <= 0xbf then i, e = i + 1, i + 1 + b - 0xa0
  elseif b == 0xd9 and x then i, e = i + 2, i + 2 + x
  elseif b == 0xda and y then i, e = i + 3, i + 3 + x * 256 + y
  elseif b == 0xdb and z then i, e = i + 5, i + 5 + ((x * 256 + y) * 256 + w) * 256 + z
  else return nil end
  if e > #r + 1 then return nil end
  return i, e
end
local function bin_end(r, i)
  local b, x, y, w, z = byte(r, i, i + 4)
  local e
  if b == 0xc4 and x then e = i + 2 + x
  elseif b == 0xc5 and y then e = i + 3 + x * 256 + y
  elseif b == 0xc6 and z then e = i + 5 + ((x * 256 + y) * 256 + w) * 256 + z
  else return nil end
  if e > #r + 1 then return nil end
  return e
end
local function scan(r, id)
  local h1, h2 = byte(r, 1, 2)
  local format
  if h1 == 0x99 and h2 == 0x02 then format = 2
  elseif h1 == 0x96 and h2 == 0x01 then format = 1
  else return nil, 'not a record of format 1 or 2' end
  local start, i = str_at(r, 3)
  if not i then return nil, 'the id is not a msgpack string' end
  if not id then
    id = sub(r, start, i - 1)
  elseif i - start ~= #id or sub(r, start, i - 1) ~= id then
    return nil, 'it holds another session'
  end
  local created_at, created, last_at, last, timeout_at, timeout = i, nil, nil, nil, nil, nil
  created, i = uint(r, i)
  if not created then return nil, 'created_at is not an unsigned integer' end
  last_at = i
  last, i = uint(r, i)
  if not last then return nil, 'last_accessed is not an unsigned integer' end
  timeout_at = i
  if byte(r, i) == 0xc0 then i = i + 1 else
    timeout, i = uint(r, i)
    if not timeout then return nil, 'timeout_ms is neither nil nor an unsigned integer' end
  end
  i = bin_end(r, i)
  if not i then return nil, 'the metadata is not a msgpack bin' end
  local meta_end, version, owner_at, owner, abs = i, '\\1', nil, nil, nil
  if format == 2 then
    local value
    value, i = uint(r, i)
    if not value then return nil, 'version is not an unsigned integer' end
    version = sub(r, meta_end, i - 1)
    owner_at = i
    if byte(r, i) == 0xc0 then i = i + 1 else
      local first
      first, i = str_at(r, i)
      if not i then return nil, 'owner is neither nil nor a string' end
      owner = sub(r, first, i - 1)
    end
    if byte(r, i) == 0xc0 then i = i + 1 else
      abs, i = uint(r, i)
      if not abs then
        return nil, 'absolute_timeout_ms is neither nil nor an unsigned integer'
      end
    end
  end
  if i ~= #r + 1 then return nil, 'the record does not end after its last field' end
  local deadline = timeout and last + timeout
  if abs then
    local a = created + abs
    if not deadline or a < deadline then deadline = a end
  end
  return id, format, deadline, last, meta_end, version, owner_at, owner, created_at, created,
    last_at, timeout_at, timeout, abs
end
local function parse(r, id)
  local f, format, _, last, meta_end, version, owner_at, owner, created_at, created, last_at,
    timeout_at, timeout, abs = scan(r, id)
  if not f then return nil, format end
  return {
    id = f, format = format, created_at = created_at, created = created, last_at = last_at,
    last = last, timeout_at = timeout_at, timeout = timeout, meta_end = meta_end,
    version = version, owner_at = owner_at, owner = owner, abs = abs,
  }
end
local function expires(f)
  local d = f.timeout and f.last + f.timeout
  if f.abs then
    local a = f.created + f.abs
    if not d or a < d then d = a end
  end
  return d
end
local function next_version(v)
  local b = string.byte(v, 1)
  if b < 0x7f then return string.char(b + 1) end
  if b == 0x7f then return '\\204\\128' end
  local digits = {string.byte(v, 2, -1)}
  local k = #digits
  while k > 0 and digits[k] == 255 do
    digits[k] = 0
    k = k - 1
  end
  if k == 0 then
    if b == 0xcc then return '\\205\\1\\0' end
    if b == 0xcd then return '\\206\\0\\1\\0\\0' end
    if b == 0xce then return '\\207\\0\\0\\0\\1\\0\\0\\0\\0' end
    return nil
  end
  digits[k] = digits[k] + 1
  if b == 0xcf and digits[1] >= 0x80 then return nil end
  return string.char(b, unpack(digits))
end
"""

#: Lua shared by the scripts that write: ``unindex(ids, exp, own, owners, id)`` removes an id
#: from both indexes, the owner hash and its owner's set; ``put(...)`` stores a record under
#: ``key`` with its TTL, both index entries and its owner (``''``: none).
INDEX: Final = """
local function unindex(ids, exp, own, owners, id)
  redis.call('ZREM', ids, id)
  redis.call('ZREM', exp, id)
  local owner = redis.call('HGET', own, id)
  if owner then
    redis.call('SREM', owners .. owner, id)
    redis.call('HDEL', own, id)
  end
end
local function put(key, ids, exp, own, owners, id, record, deadline, ttl, owner)
  if ttl == '' then
    redis.call('SET', key, record)
  else
    redis.call('SET', key, record, 'PX', ttl)
  end
  redis.call('ZADD', ids, 0, id)
  if deadline == '' then
    redis.call('ZREM', exp, id)
  else
    redis.call('ZADD', exp, deadline, id)
  end
  local old = redis.call('HGET', own, id)
  if old and old ~= owner then redis.call('SREM', owners .. old, id) end
  if owner ~= '' then
    redis.call('SADD', owners .. owner, id)
    if old ~= owner then redis.call('HSET', own, id, owner) end
  elseif old then
    redis.call('HDEL', own, id)
  end
end
"""
