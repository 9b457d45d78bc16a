"""The Lua scripts: every mutation of a conversation is one of these.

Each script touches only keys of one conversation (they share the hash tag
``{conversation_id}``, see :mod:`steerline.log.redis.keys`), so it runs
atomically, also on Redis Cluster. Lease values are ``"<owner>|<epoch>"``;
the epoch is the conversation's counter of lease hand-overs, so a process
whose lease expired and was taken over can never write again (its epoch is
old), even if it takes no notice of the loss.
"""

from __future__ import annotations

# Retention by age. Redis' own time-based trimming (XTRIM MINID on
# millisecond ids) cannot serve: the entry ids are ``<seq>-0``. So each
# conversation has a sorted set ``times`` of commit times, one member per
# retention tick: member = the tick's end in ms, score = the last seq
# committed by then ("every event up to score was committed at or before
# member"). Seqs and ticks both only grow, so the lowest scores are the
# oldest ticks: trimming pops them while their time is past the cutoff and
# XTRIMs the stream up to the last seq they cover. The log entries and the
# read path stay as they were (no time field per event).
_TIMES = """
local function stamp(times, at, seq)
  local last = redis.call('ZRANGE', times, -1, -1)
  if #last > 0 and tonumber(last[1]) > at then at = tonumber(last[1]) end
  redis.call('ZADD', times, 'GT', seq, string.format('%d', at))
end
local function trim_age(times, log, cutoff)
  local cut = 0
  while true do
    local first = redis.call('ZRANGE', times, 0, 0, 'WITHSCORES')
    if #first == 0 or tonumber(first[1]) > cutoff then break end
    cut = tonumber(first[2])
    redis.call('ZREM', times, first[1])
  end
  if cut > 0 then redis.call('XTRIM', log, 'MINID', string.format('%d-0', cut + 1)) end
  return cut
end
"""

# Helpers shared by the scripts that append (COMMIT, INTAKE).
_SEAL = """
local function seal(unsealed, seq)
  -- ``{"event":…,"data":…}`` with ``"seq"`` added last (as seal_envelope)
  return string.sub(unsealed, 1, -2) .. ',"seq":' .. seq .. '}'
end
local function reseal(envelope, provisional, seq)
  -- an envelope sealed as ``..."seq":<provisional>}`` sealed again with ``seq``
  if tonumber(provisional) == seq then return envelope end
  return string.sub(envelope, 1, #envelope - #provisional - 1) .. seq .. '}'
end
local function append(log, retention, seq, event, envelope, run)
  if retention > 0 then
    redis.call('XADD', log, 'MAXLEN', retention, seq .. '-0', 'e', event, 'b', envelope, 'r', run)
  else
    redis.call('XADD', log, seq .. '-0', 'e', event, 'b', envelope, 'r', run)
  end
end
local function stamp_and_cap(times, at, seq, retention)
  stamp(times, at, seq)
  if retention > 0 then
    -- times of events MAXLEN dropped would only pile up
    redis.call('ZREMRANGEBYSCORE', times, '-inf', seq - retention)
  end
end
local function put_item(rec, colls, items, order, collection, key, value)
  if redis.call('HSET', items, key, value) == 1 then
    -- a new item goes last; a replaced one keeps its place
    redis.call('ZADD', order, redis.call('HINCRBY', rec, 'io', 1), key)
    redis.call('SADD', colls, collection)
  end
end
"""

CREATE = (
    _TIMES
    + """
-- KEYS: rec, log, lease, times   ARGV: owner, ttl_ms, record, now_tick_ms,
--   [event, envelope, run]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'seq', 0, 'epoch', 1)
redis.call('SET', KEYS[3], ARGV[1] .. '|1', 'PX', ARGV[2])
if ARGV[5] then
  redis.call('XADD', KEYS[2], '1-0', 'e', ARGV[5], 'b', ARGV[6], 'r', ARGV[7])
  redis.call('HSET', KEYS[1], 'seq', 1)
  stamp(KEYS[4], tonumber(ARGV[4]), 1)
end
return 1
"""
)

# Taking a free lease (ACQUIRE, INTAKE): the epoch counts the hand-overs.
_TAKE = """
local function take(rec, lease, owner, ttl_ms, r)
  local epoch = redis.call('HINCRBY', rec, 'epoch', 1)
  redis.call('SET', lease, owner .. '|' .. epoch, 'PX', ttl_ms)
  return {'acquired', r[1], r[2], tostring(epoch)}
end
"""

ACQUIRE = (
    _TAKE
    + """
-- KEYS: rec, lease   ARGV: owner, ttl_ms
-- -> {'gone'} | {'held', holder} | {'mine'|'acquired', record, seq, epoch}
local r = redis.call('HMGET', KEYS[1], 'r', 'seq', 'epoch', 'del')
if not r[1] or r[4] == '1' then return {'gone'} end
local holder = redis.call('GET', KEYS[2])
if holder then
  local sep = string.find(holder, '|', 1, true)
  local who = string.sub(holder, 1, sep - 1)
  if who ~= ARGV[1] then return {'held', who} end
  return {'mine', r[1], r[2], string.sub(holder, sep + 1)}
end
return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], r)
"""
)

RENEW = """
-- KEYS: lease   ARGV: value, ttl_ms   -> 1 renewed, 0 lost
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

RELEASE = """
-- KEYS: lease, ctl   ARGV: value   -> 'ok' | 'pending' | 'lost'
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
if redis.call('XLEN', KEYS[2]) > 0 then return 'pending' end
redis.call('DEL', KEYS[1])
return 'ok'
"""

SEND_CONTROL = """
-- KEYS: lease, ctl   ARGV: limit, request id, reply stream, body
-- -> {lease value, entry id} (queued; the caller wakes its holder), 0 nobody
-- holds the lease, -1 too many waiting
local holder = redis.call('GET', KEYS[1])
if not holder then return 0 end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[1]) then return -1 end
return {holder, redis.call('XADD', KEYS[2], '*', 'q', ARGV[2], 'to', ARGV[3], 'b', ARGV[4])}
"""

WITHDRAW_CONTROL = """
-- A requester waiting for a holder that may have died. KEYS: lease, ctl
-- ARGV: the lease value the request was sent to, its entry id
-- -> 'wait': that holder still holds the lease (it answers, or its lease
--    expires); 'handed': another process took the lease, and reads the
--    requests left in the stream when it does (it answers);
--    'withdrawn': nobody holds the lease and the request was still there:
--    deleted now, nobody ran it or ever will (the old holder is fenced);
--    'done': nobody holds the lease and the request is gone: its holder
--    ran it and wrote its effects, but its answer was lost
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return 'wait' end
if holder then return 'handed' end
if redis.call('XDEL', KEYS[2], ARGV[2]) == 1 then return 'withdrawn' end
return 'done'
"""

COMMIT = (
    _TIMES
    + _SEAL
    + """
-- One write batch of the lease holder, fenced by its lease value.
-- KEYS: rec, log, state, lease, ctl, colls, times, then (items, order) pairs
-- ARGV: lease value, retention (0: keep all), now_tick_ms, age cutoff_ms
-- (0: no retention by age), batch token ('' when the batch appends nothing),
-- then operations:
--   A provisional-seq event envelope run | S key value
--   | I pair collection key value | D pair key | R record | K control-entry-id
-- The script gives each append its seq (the stored seq + 1): other processes
-- append too (INTAKE), so the holder's own numbering is provisional, and an
-- envelope sealed with another seq is sealed again here. A batch that appends
-- records its token: a retry of a batch whose reply was lost finds it and
-- appends nothing twice (the other operations are idempotent).
-- -> {'ok', first seq appended or 0, last seq trimmed by age or 0, seq}
--    | {'fenced'} | {'gone'}
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'del') == '1' then
  return {'gone'}
end
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return {'fenced'} end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local token = ARGV[5]
if token ~= '' and redis.call('HGET', KEYS[1], 'b') == token then
  return {'ok', tonumber(redis.call('HGET', KEYS[1], 'bf')), 0, seq}
end
local before = seq
local first = 0
local retention = tonumber(ARGV[2])
local i = 6
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' then
    seq = seq + 1
    if first == 0 then first = seq end
    append(KEYS[2], retention, seq, ARGV[i + 2], reseal(ARGV[i + 3], ARGV[i + 1], seq), ARGV[i + 4])
    i = i + 5
  elseif op == 'S' then
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'I' then
    put_item(KEYS[1], KEYS[6], KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 1]) + 1],
             ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    i = i + 5
  elseif op == 'D' then
    local pair = tonumber(ARGV[i + 1])
    redis.call('HDEL', KEYS[pair], ARGV[i + 2])
    redis.call('ZREM', KEYS[pair + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'R' then
    redis.call('HSET', KEYS[1], 'r', ARGV[i + 1])
    i = i + 2
  elseif op == 'K' then
    redis.call('XDEL', KEYS[5], ARGV[i + 1])
    i = i + 2
  else
    return redis.error_reply('unknown operation ' .. tostring(op))
  end
end
if first > 0 then redis.call('HSET', KEYS[1], 'seq', seq, 'b', token, 'bf', first) end
local cut = 0
if seq > before then stamp_and_cap(KEYS[7], tonumber(ARGV[3]), seq, retention) end
if tonumber(ARGV[4]) > 0 then cut = trim_age(KEYS[7], KEYS[2], tonumber(ARGV[4])) end
return {'ok', first, cut, seq}
"""
)

DELETE = """
-- KEYS: rec, log, state, lease, ctl, colls, then every (items, order) key
-- The record stays as a tombstone: a deleted id is never used again.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'del') == '1' then
  return 0
end
redis.call('HSET', KEYS[1], 'del', '1')
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"""

TRIM = (
    _TIMES
    + """
-- The sweep: retention by age of one conversation, by any process (no
-- lease: it only drops what is past the cutoff, which no write brings back).
-- KEYS: rec, log, times   ARGV: cutoff_ms, now_ms
-- -> {'gone'} | {'ok', last seq trimmed or 0, when to look again (ms)}
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'del') == '1' then
  return {'gone'}
end
local cut = trim_age(KEYS[3], KEYS[2], tonumber(ARGV[1]))
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0)
if #oldest > 0 then return {'ok', cut, oldest[1]} end
return {'ok', cut, ARGV[2]}
"""
)

INTAKE = (
    _TIMES
    + _SEAL
    + _TAKE
    + """
-- A message for a conversation, from any process, with no lease (SPEC §4).
-- A free lease is taken here (the caller runs the conversation); while
-- another process runs it, the message is queued and logged at once, in this
-- one script: stored as a queue item, its id added to the dedup window, its
-- ``message_queued`` appended. The holder learns of it from the log and
-- takes it into its inbox; delivery later deletes the item in the script
-- that appends its ``thread_started``, so no hand-over loses or repeats it.
-- KEYS: rec, log, lease, colls, times, queue items, queue order,
--   seen items, seen order
-- ARGV: owner, ttl_ms, message id, lane, priority, item head, item middle,
--   item tail, envelope head, envelope tail, max queued, retention,
--   now_tick_ms, cutoff_ms, queue collection, seen collection
-- The item and the envelope come in parts around the values only this
-- script knows: the item's ``arrival`` (after every queued message's) and
-- ``since`` (the seq before the message), the envelope's ``position`` (the
-- message's place in its lane).
-- -> {'gone'} | {'acquired', record, seq, epoch} | {'mine'} | {'idle', holder}
--    | {'duplicate', acceptance} | {'full'}
--    | {'queued', seq, position, lease value, run, last seq trimmed by age,
--       the queue's items in their order (its view for the answer)}
local r = redis.call('HMGET', KEYS[1], 'r', 'seq', 'epoch', 'del')
if not r[1] or r[4] == '1' then return {'gone'} end
local holder = redis.call('GET', KEYS[3])
if not holder then return take(KEYS[1], KEYS[3], ARGV[1], ARGV[2], r) end
local who = string.sub(holder, 1, string.find(holder, '|', 1, true) - 1)
if who == ARGV[1] then return {'mine'} end
local seen = redis.call('HGET', KEYS[8], ARGV[3])
if seen then return {'duplicate', seen} end
local record = cjson.decode(r[1])
if record['status'] ~= 'running' then return {'idle', who} end
if redis.call('HLEN', KEYS[6]) >= tonumber(ARGV[11]) then return {'full'} end
-- after every message of its lane with an equal or higher priority
local position = 0
local arrival = 0
local priority = tonumber(ARGV[5])
for _, value in ipairs(redis.call('HVALS', KEYS[6])) do
  local m = cjson.decode(value)['message']
  if m['lane'] == ARGV[4] and (tonumber(m['priority']) or 0) >= priority then
    position = position + 1
  end
  arrival = math.max(arrival, tonumber(m['arrival']) or 0)
end
local since = tonumber(r[2] or '0')
local seq = since + 1
local run = record['active_run_id']
if type(run) ~= 'string' then run = '' end
put_item(KEYS[1], KEYS[4], KEYS[6], KEYS[7], ARGV[15], ARGV[3],
         ARGV[6] .. (arrival + 1) .. ARGV[7] .. since .. ARGV[8])
put_item(KEYS[1], KEYS[4], KEYS[8], KEYS[9], ARGV[16], ARGV[3], '{"after":' .. since .. '}')
local unsealed = ARGV[9] .. position .. ARGV[10]
local retention = tonumber(ARGV[12])
append(KEYS[2], retention, seq, 'message_queued', seal(unsealed, seq), run)
redis.call('HSET', KEYS[1], 'seq', seq)
stamp_and_cap(KEYS[5], tonumber(ARGV[13]), seq, retention)
local cut = 0
if tonumber(ARGV[14]) > 0 then cut = trim_age(KEYS[5], KEYS[2], tonumber(ARGV[14])) end
local items = {}
for i, key in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  items[i] = redis.call('HGET', KEYS[6], key)
end
return {'queued', seq, position, holder, run, cut, items}
"""
)

CLAIM = (
    _TIMES
    + _SEAL
    + """
-- A message id enters a conversation's dedup window, or is found there: the
-- lease holder claims each new id here before it accepts the message, so a
-- retry reaching another process at the same moment (INTAKE) is one of the
-- two, never both.
-- KEYS: rec, colls, seen items, seen order   ARGV: collection, message id
-- -> {1} claimed | {0, what the window stores for it}
local seen = redis.call('HGET', KEYS[3], ARGV[2])
if seen then return {0, seen} end
put_item(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], '')
return {1}
"""
)
