"""The Lua scripts that make every multi-key write atomic on the Redis server.

Key layout of a table (every key carries the hash tag ``{table}``, so Redis Cluster keeps a
table in one slot and every script may touch any key of the table):

``{table}:s:<id>``
    a string: the session's record exactly as :func:`sessionkeeper.backend.encode_session` writes it
    (``GET`` it and :func:`sessionkeeper.backend.decode_session` reads it). Its TTL is
    ``expires_at - last_accessed + ttl_margin_ms`` from the last write (``expires_at``: the
    earlier of the idle and the absolute deadline), so Redis drops forgotten sessions by
    itself; a session that never expires has no TTL.
``{table}:ids``
    a sorted set of every stored id, all with score 0: ordered by id, for ``list`` and for
    ``iter_sessions`` in pages (each id exactly once, in bounded memory).
``{table}:exp``
    a sorted set of the ids that can expire, scored by ``expires_at``: ``count`` and
    ``cleanup_expired`` read only what expired.
``{table}:own``
    a hash: the owner of every stored session that has one (id -> owner). The scripts read
    the previous owner of an id here, in O(1), without decoding its record, and find it even
    after Redis dropped the record through its TTL (so a cleanup keeps the owner sets exact).
``{table}:o:<owner>``
    a set: the ids of the stored sessions of ``owner`` (expired ones until a cleanup removes
    them). ``list(owner=)``, ``count(owner=)`` and ``delete_owner`` cost what the owner holds.

Every write of a session (store, conditional store, touch, delete, take, rotate, cleanup,
``delete_owner``) is one script that updates the record, both indexes, the owner hash and the
owner sets together: no reader ever sees them disagree. The owner-set keys are derived inside
the scripts from the prefix ``{table}:o:`` (the previous owner is only known on the server), and
the store script derives every key of the table from the session key it declares (fewer
arguments to send); they carry the table's hash tag, so they are in the slot of the keys each
call declares, which is all Redis Cluster requires of a script.

The scripts read records themselves (:data:`~sessionkeeper_redis._lua.PARSE`): format 1
``[1, id, created_at, last_accessed, timeout_ms, metadata]`` (written before issue 14) and
format 2 ``[2, id, created_at, last_accessed, timeout_ms, metadata, version, owner,
absolute_timeout_ms]``, where the metadata is one msgpack ``bin``. msgpack writes a
non-negative integer in its shortest form and every longer form starts with a larger byte, so
comparing the encodings byte by byte compares the numbers exactly, up to the codec's limit of
2**63 - 1. Lua numbers are doubles: deadlines, versions and scores are exact up to 2**53 (ms:
the year 287,396).
"""

from __future__ import annotations

import hashlib
from typing import Final

from ._lua import BIND, INDEX, PARSE
from ._options import MAX_TTL_MS

__all__ = [
    "COUNT",
    "DELETE",
    "DELETE_OWNER",
    "EXPIRE_PAGE",
    "LIST_PAGE",
    "OWNER_LIVE",
    "ROTATE",
    "SCRIPTS",
    "STORE",
    "STORE_IF",
    "TAKE",
    "TOUCH",
    "Script",
]


class Script:
    """One Lua script and its SHA1 (what ``EVALSHA`` names).

    With ``helpers`` (the start of ``source`` that only defines local functions; the rest is
    the body), the same code is also a Redis 7 function (issue 15): ``library`` is what
    ``FUNCTION LOAD`` takes, a library of the one function ``function``, both named after the
    SHA1 of the library's text, so two releases' libraries never clash and a server holds each
    at most once. The
    helpers are defined once, when the library loads, and ``FCALL`` skips the script's
    per-call set-up: about 1-1.5 us (10-17%) less server time per store than ``EVALSHA``.
    """

    __slots__ = ("function", "library", "name", "sha", "source")

    def __init__(self, name: str, source: str, *, helpers: str | None = None) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.function: str | None = None
        self.library: str | None = None
        if helpers is not None:
            assert source.startswith(helpers), "the helpers start the script"
            assert BIND in helpers, "the helpers bind the string functions"
            body = source[len(helpers) :]
            unbound = helpers.replace(BIND, BIND.partition(" =")[0] + "\n")
            library = (
                "#!lua name=@NAME@\n"
                f"{unbound}redis.register_function('@NAME@', function(KEYS, ARGV)\n"
                f"{BIND.removeprefix('local ')}{body}end)\n"
            )
            # Named after the library's own text (not the script's): a release that changes
            # only how the library wraps the code still gets a name of its own.
            digest = hashlib.sha1(library.encode(), usedforsecurity=False).hexdigest()
            self.function = f"sessionkeeper_{name}_{digest[:16]}"
            self.library = library.replace("@NAME@", self.function)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


#: KEYS: session key, ids, exp, own. ARGV: id, record, deadline ('' = never), ttl ('' = no
#: TTL), owner ('' = none), owner-set prefix. Replaces whatever the key held, exactly as given.
STORE: Final = Script(
    "store",
    INDEX
    + """
put(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[6], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
""",
)

#: KEYS: the session key. ARGV: the session's record as the codec writes it (format 2; its
#: version is replaced), now, if_version msgpack-encoded ('' = unconditional), ttl margin.
#: One key and four arguments (issue 15): the client packs every argument in Python, about a
#: microsecond each, so the script reads what it needs from the record itself (id, deadline,
#: owner: the fields ``scan`` of :mod:`~sessionkeeper_redis._lua` returns) and derives the
#: table's other keys from the session key, ``{table}:s:<id>`` (they share its hash tag, so its
#: slot). Both records are read as values, no table, and the keys are built only for the index
#: entries that change (about 15% less server time per store than a table per record and every
#: key up front).
#: ``current`` is the version of the session stored under the key if it is live at ``now``,
#: else 0; versions travel msgpack-encoded, so they compare and count exactly. Returns ``{0,
#: current}`` (and writes nothing) when ``if_version`` is given and is not ``current``; else
#: stores the record with version ``current + 1`` and returns that version alone (a string: a
#: table reply costs the server Redis's look-ups of its special fields, about 2 us).
#: What the key holds when it is no record (damage, a key of another type) is an error for a
#: conditional store (the condition cannot be judged) and counts as absent for an
#: unconditional one, which replaces it.
#: Over a record it parsed, the script writes only the index entries that change: every
#: writer puts a record with its id entry, its deadline entry (at ``expires_at``) and its owner
#: entries, and removes them with it, so a stored record implies them (``check --repair``
#: restores the id and deadline entries if something else broke them). Over no record, or
#: damage, it writes them all.
STORE_IF: Final = Script(
    "store_if",
    PARSE
    + INDEX
    + """
local key, new = KEYS[1], ARGV[1]
local id, format, deadline, last, meta_end, _, owner_at, owner = scan(new, nil)
if not id or format ~= 2 then
  return redis.error_reply('BAD RECORD the new record: ' .. (id and 'not format 2' or format))
end
local size = #key - #id
local s_, colon = byte(key, size - 1, size)
if s_ ~= 115 or colon ~= 58 or sub(key, size + 1) ~= id then
  return redis.error_reply('BAD RECORD the key is not the one of session ' .. id)
end
local conditional = ARGV[3] ~= ''
local record = redis.pcall('GET', key)
local current, parsed, old_deadline, old_owner = '\\0', false, nil, nil
if record then
  if type(record) == 'table' then
    if conditional then
      return damaged('it is not a string: something other than sessionkeeper wrote it')
    end
  else
    local f, why, d, version
    f, why, d, _, _, version, _, old_owner = scan(record, id)
    if f then
      parsed, old_deadline = true, d
      if not d or tonumber(ARGV[2]) <= d then current = version end
    elseif conditional then
      return damaged(why)
    end
  end
end
if conditional and ARGV[3] ~= current then return {0, current} end
local version = next_version(current)
if not version then return redis.error_reply('VERSION the stored version is the largest') end
record = sub(new, 1, meta_end - 1) .. version .. sub(new, owner_at)
local ttl = ''
if deadline then
  local ms = deadline - last
  if ms < 0 then ms = 0 end
  ms = ms + tonumber(ARGV[4])
  if ms <= MAX_TTL then ttl = ms end
end
if not parsed then
  local prefix = sub(key, 1, size - 2)
  put(key, prefix .. 'ids', prefix .. 'exp', prefix .. 'own', prefix .. 'o:', id, record,
    deadline or '', ttl, owner or '')
  return version
end
if ttl == '' then
  redis.call('SET', key, record)
else
  redis.call('SET', key, record, 'PX', ttl)
end
local prefix = sub(key, 1, size - 2)
if deadline ~= old_deadline then
  if deadline then
    redis.call('ZADD', prefix .. 'exp', deadline, id)
  else
    redis.call('ZREM', prefix .. 'exp', id)
  end
end
if owner ~= old_owner then
  if old_owner then redis.call('SREM', prefix .. 'o:' .. old_owner, id) end
  if owner then
    redis.call('SADD', prefix .. 'o:' .. owner, id)
    redis.call('HSET', prefix .. 'own', id, owner)
  else
    redis.call('HDEL', prefix .. 'own', id)
  end
end
return version
""".replace("MAX_TTL", str(MAX_TTL_MS)),
    helpers=PARSE + INDEX,
)

#: KEYS: session key, exp. ARGV: id, new last_accessed msgpack-encoded, the same in decimal,
#: ttl margin, largest TTL. Returns nil when the session is gone (it is never recreated), else
#: the record as now stored. ``last_accessed`` only moves forward; the TTL and the deadline
#: follow ``expires_at`` (the absolute deadline never moves).
TOUCH: Final = Script(
    "touch",
    PARSE
    + """
local record = redis.call('GET', KEYS[1])
if not record then return false end
local f, why = parse(record, ARGV[1])
if not f then return damaged(why) end
local old = string.sub(record, f.last_at, f.timeout_at - 1)
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
record = string.sub(record, 1, f.last_at - 1) .. new .. string.sub(record, f.timeout_at)
f.last = tonumber(ARGV[3])
local deadline = expires(f)
if not deadline then
  redis.call('SET', KEYS[1], record, 'KEEPTTL')
  return record
end
local ttl = math.max(deadline - f.last, 0) + tonumber(ARGV[4])
if ttl <= tonumber(ARGV[5]) then
  redis.call('SET', KEYS[1], record, 'PX', ttl)
else
  redis.call('SET', KEYS[1], record, 'KEEPTTL')
end
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return record
""",
)

#: KEYS: session key, ids, exp, own. ARGV: id, owner-set prefix. Returns 1 when a session was
#: stored, else 0.
DELETE: Final = Script(
    "delete",
    INDEX
    + """
local n = redis.call('DEL', KEYS[1])
unindex(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[1])
return n
""",
)

#: KEYS: session key, ids, exp, own. ARGV: id, owner-set prefix, now. Removes the session
#: (live or expired) and returns its record if it was live at ``now``, else nil.
TAKE: Final = Script(
    "take",
    PARSE
    + INDEX
    + """
local record = redis.call('GET', KEYS[1])
if not record then
  unindex(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[1])
  return false
end
local f, why = parse(record, ARGV[1])
if not f then return damaged(why) end
redis.call('DEL', KEYS[1])
unindex(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[1])
local deadline = expires(f)
if deadline and tonumber(ARGV[3]) > deadline then return false end
return record
""",
)

#: KEYS: old session key, new session key, ids, exp, own. ARGV: old id, new id, new id
#: msgpack-encoded, owner-set prefix, now, now msgpack-encoded, ttl margin, largest TTL.
#: When the session is live at ``now``: stores it under the new id (format 2, version + 1,
#: ``last_accessed`` now unless it was later) with its TTL, index entries and owner, removes
#: the old id, and returns the new record; else nil and nothing changes.
ROTATE: Final = Script(
    "rotate",
    PARSE
    + INDEX
    + """
local record = redis.call('GET', KEYS[1])
if not record then return false end
local f, why = parse(record, ARGV[1])
if not f then return damaged(why) end
local now = tonumber(ARGV[5])
local deadline = expires(f)
if deadline and now > deadline then return false end
local last = string.sub(record, f.last_at, f.timeout_at - 1)
if now > f.last then
  last = ARGV[6]
  f.last = now
end
local rest = '\\192\\192'
if f.format == 2 then rest = string.sub(record, f.owner_at) end
local version = next_version(f.version)
if not version then return redis.error_reply('VERSION the stored version is the largest') end
local new = '\\153\\2' .. ARGV[3] .. string.sub(record, f.created_at, f.last_at - 1) .. last
  .. string.sub(record, f.timeout_at, f.meta_end - 1) .. version .. rest
redis.call('DEL', KEYS[1])
unindex(KEYS[3], KEYS[4], KEYS[5], ARGV[4], ARGV[1])
deadline = expires(f)
local ttl = ''
local score = ''
if deadline then
  score = deadline
  local ms = math.max(deadline - f.last, 0) + tonumber(ARGV[7])
  if ms <= tonumber(ARGV[8]) then ttl = ms end
end
put(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[4], ARGV[2], new, score, ttl, f.owner or '')
return new
""",
)

#: KEYS: ids, exp, own, then the key of each session. ARGV: now, owner-set prefix, then the id
#: of each session. Removes each session whose deadline is still before ``now`` (a store or
#: touch since it was listed may have moved it), with its owner entries. Returns {removed,
#: dropped}: sessions deleted, and sessions whose index entries were all that was left (Redis
#: had already dropped the key through its TTL).
EXPIRE_PAGE: Final = Script(
    "expire_page",
    INDEX
    + """
local now = tonumber(ARGV[1])
local removed, dropped = 0, 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if deadline and tonumber(deadline) < now then
    unindex(KEYS[1], KEYS[2], KEYS[3], ARGV[2], id)
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

#: KEYS: owner set, exp. ARGV: now, '1' to count instead of listing. The ids of the owner's
#: sessions live at ``now`` (or how many): read-only, cost what the owner holds.
OWNER_LIVE: Final = Script(
    "owner_live",
    """
local now = tonumber(ARGV[1])
local live = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local deadline = redis.call('ZSCORE', KEYS[2], id)
  if not deadline or tonumber(deadline) >= now then live[#live + 1] = id end
end
if ARGV[2] == '1' then return #live end
return live
""",
)

#: KEYS: owner set, ids, exp, own. ARGV: owner, session key prefix, page size. Deletes up to a
#: page of the owner's sessions (expired ones included) with their index entries, and returns
#: {sessions deleted, ids taken from the owner's set}: the caller repeats while a whole page
#: was taken.
DELETE_OWNER: Final = Script(
    "delete_owner",
    """
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', KEYS[4], id) == ARGV[1] then
    removed = removed + redis.call('DEL', ARGV[2] .. id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
end
return {removed, #ids}
""",
)

#: Every script, for ``SCRIPT LOAD`` after a server lost its script cache.
SCRIPTS: Final = (
    STORE,
    STORE_IF,
    TOUCH,
    DELETE,
    TAKE,
    ROTATE,
    EXPIRE_PAGE,
    LIST_PAGE,
    COUNT,
    OWNER_LIVE,
    DELETE_OWNER,
)
