//! The Lua scripts: every step that reads and then writes shared state runs as one script,
//! so it is atomic in Redis and no two processes ever read-modify-write the same thing
//! (STYLE.md 12). Times come from the server's clock (`TIME`), never from the callers',
//! so machines with skewed clocks share limits correctly.
//!
//! The scripts touch keys they derive from their arguments (the subtopic lists of a
//! `generate` node); that is fine on one Redis, not on a Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// A reply on the coordinator's stream, and for a report the job's acknowledgement in the
/// same step: the result is stored before (atomically with) the ack. Nothing is written
/// for a coordinator that is gone (its beacon expired).
///
/// KEYS: replies, jobs, coordinator beacon. ARGV: group, entry id, job, delivery, seq, kind,
/// body, ack (`1` to acknowledge and delete the job entry).
pub(super) static REPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local alive = redis.call('EXISTS', KEYS[3])
if alive == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000000, '*',
    'job', ARGV[3], 'd', ARGV[4], 'n', ARGV[5], 'k', ARGV[6], 'b', ARGV[7])
end
if ARGV[8] == '1' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
end
return alive
",
    )
});

/// Puts a job back for another worker (this one cannot serve its profiles): the entry is
/// added again at the end of the stream and the old one acknowledged, in one step.
///
/// KEYS: jobs. ARGV: group, old entry id, field, entry.
pub(super) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
",
    )
});

/// A worker's heartbeat: of the entries it is running, those still pending under its
/// name are claimed again by it (which resets their idle time, so nobody else claims
/// them); for each, whether it is still its own, whether its run was cancelled or
/// stopped, and whether its coordinator is still there.
///
/// KEYS: jobs, then per job: run cancel flag, run stop flag, coordinator beacon.
/// ARGV: group, consumer, then one entry id per job.
pub(super) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owned = {}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 100000, ARGV[2])
for _, p in ipairs(pending) do owned[p[1]] = true end
local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local k = 2 + (i - 3) * 3
  local mine = 0
  if owned[id] then
    mine = 1
    table.insert(claim, id)
  end
  table.insert(out, {mine, redis.call('EXISTS', KEYS[k]), redis.call('EXISTS', KEYS[k + 1]),
    redis.call('EXISTS', KEYS[k + 2])})
end
if #claim > 5 then
  table.insert(claim, 'JUSTID')
  redis.call(unpack(claim))
end
return out
",
    )
});

/// Claims entries whose holder stopped heart-beating for `min_idle` ms, with how many
/// times each has been delivered (the first delivery counts).
///
/// KEYS: jobs. ARGV: group, consumer, min idle ms, cursor, count.
/// Returns `[next cursor, [id, [field, value, ...], deliveries], ...]`.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if e and e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local n = 1
    if p[1] then n = p[1][4] end
    table.insert(out, {e[1], e[2], n})
  end
end
return out
",
    )
});

/// Reserves a call's place in a profile's requests-per-minute and tokens-per-minute
/// budgets (GCRA: one stored time per budget, the "theoretical arrival time"), unless the
/// profile is cooling down after a 429. Each budget allows a burst of one second's worth,
/// like the in-process token buckets. A reservation is made at once and the caller waits
/// until its time, so waiters are served in the order they asked.
///
/// KEYS: requests TAT, tokens TAT, cool-down. ARGV: requests per minute (0: none), tokens
/// per minute (0: none), the call's tokens. Returns `[wait ms, "ok" | "cool"]`; after
/// `cool` nothing was reserved and the caller asks again after waiting.
pub(super) static RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cool = tonumber(redis.call('GET', KEYS[3]) or '0')
if cool > now then return {tostring(cool - now), 'cool'} end
local function reserve(key, per_minute, n)
  local T = 60000 / per_minute
  local burst = math.max(1, math.floor(per_minute / 60))
  if n > burst then n = burst end
  if n < 1 then n = 1 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allowed = tat + n * T - burst * T
  if allowed < now then allowed = now end
  local next_tat = tat + n * T
  redis.call('SET', key, tostring(next_tat), 'PX', math.ceil(next_tat - now) + 60000)
  return allowed - now
end
local wait = 0
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
if rpm > 0 then wait = math.max(wait, reserve(KEYS[1], rpm, 1)) end
if tpm > 0 then wait = math.max(wait, reserve(KEYS[2], tpm, tonumber(ARGV[3]))) end
return {tostring(wait), 'ok'}
",
    )
});

/// Takes one of a profile's `max_concurrency` slots: a lease in a sorted set scored by its
/// expiry (server time), so a slot of a process that died frees itself.
///
/// KEYS: leases, cool-down. ARGV: max, holder, lease ms. Returns `"0"` when taken, `"-1"`
/// when all slots are held, or the ms to wait for a cool-down.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
if cool > now then return tostring(cool - now) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
  return '0'
end
return '-1'
",
    )
});

/// Extends a held lease. KEYS: leases. ARGV: holder, lease ms.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
",
    )
});

/// After a 429: the profile cools down until now + delay, unless it already cools longer.
/// KEYS: cool-down. ARGV: delay ms.
pub(super) static COOL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local till = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if till > current then
  redis.call('SET', KEYS[1], tostring(till), 'PX', math.ceil(tonumber(ARGV[1])) + 1000)
end
return 1
",
    )
});

/// A spread `generate` node starts a call: its node-wide number, the node's stop reason,
/// and the feedback sample: the most repeated items, the subtopic's newest finds, then the
/// other subtopics' newest finds.
///
/// KEYS: counters, hot (sorted set), hot texts, subtopics, stop, this subtopic's recent
/// list. ARGV: feedback size, recent-list key prefix, this subtopic's name.
pub(super) static NODE_BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local call = redis.call('HINCRBY', KEYS[1], 'started', 1)
local stop = redis.call('GET', KEYS[5]) or ''
local n = tonumber(ARGV[1])
local hot, own, others = {}, {}, {}
if n > 0 then
  local half = math.floor(n / 2)
  if half > 0 then
    for _, key in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, half - 1)) do
      local text = redis.call('HGET', KEYS[3], key)
      if text then table.insert(hot, text) end
    end
  end
  own = redis.call('LRANGE', KEYS[6], 0, n - 1)
  local subs = redis.call('SMEMBERS', KEYS[4])
  table.sort(subs)
  for _, s in ipairs(subs) do
    if s ~= ARGV[3] then
      for _, text in ipairs(redis.call('LRANGE', ARGV[2] .. s, 0, n - 1)) do
        table.insert(others, text)
      end
    end
  end
end
return {call, stop, hot, own, others}
",
    )
});

/// A spread `generate` node records a finished call: every candidate is checked against the
/// node's exact set (`SADD` says whether it is new) and the new ones are accepted with
/// their items, all in one step, so two producers on different machines never accept the
/// same item; repeats feed the "most repeated" sample; the node's counters and streaks
/// move on.
///
/// KEYS: counters, seen, items, this subtopic's recent list, subtopics, hot, hot texts.
/// ARGV: subtopic name, failed (0/1), min new per call (-1: none; partition calls too),
/// cost ('' when unknown), input, output, reasoning, cached tokens, estimated (0/1),
/// usage unknown (0/1), candidates parsed, ttl seconds, then (key, text, item) per
/// candidate. Returns `[flags, finished, candidates, cost, cost unknown, low-yield streak,
/// failure streak, unique]`.
pub(super) static NODE_RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local c = KEYS[1]
local flags = {}
local new = 0
for i = 13, #ARGV, 3 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    new = new + 1
    table.insert(flags, 1)
    redis.call('RPUSH', KEYS[3], ARGV[i + 2])
    redis.call('LPUSH', KEYS[4], ARGV[i + 1])
  else
    table.insert(flags, 0)
    redis.call('ZINCRBY', KEYS[6], 1, ARGV[i])
    redis.call('HSETNX', KEYS[7], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', c, 'duplicates', 1)
  end
end
if new > 0 then
  redis.call('LTRIM', KEYS[4], 0, 255)
  redis.call('SADD', KEYS[5], ARGV[1])
end
redis.call('HINCRBY', c, 'finished', 1)
redis.call('HINCRBY', c, 'candidates', tonumber(ARGV[11]))
if ARGV[4] == '' then
  redis.call('HSET', c, 'cost_unknown', 1)
else
  redis.call('HINCRBYFLOAT', c, 'cost', ARGV[4])
end
redis.call('HINCRBY', c, 'input_tokens', ARGV[5])
redis.call('HINCRBY', c, 'output_tokens', ARGV[6])
redis.call('HINCRBY', c, 'reasoning_tokens', ARGV[7])
redis.call('HINCRBY', c, 'cached_input_tokens', ARGV[8])
if ARGV[9] == '1' then redis.call('HSET', c, 'estimated', 1) end
if ARGV[10] == '1' then redis.call('HSET', c, 'usage_unknown', 1) end
local min_new = tonumber(ARGV[3])
if ARGV[2] == '1' then
  redis.call('HINCRBY', c, 'failed', 1)
  redis.call('HINCRBY', c, 'failure_streak', 1)
elseif min_new >= 0 then
  redis.call('HSET', c, 'failure_streak', 0)
  if new < min_new then
    redis.call('HINCRBY', c, 'low_yield_streak', 1)
  else
    redis.call('HSET', c, 'low_yield_streak', 0)
  end
else
  redis.call('HSET', c, 'failure_streak', 0)
end
local ttl = tonumber(ARGV[12])
for i = 1, 7 do redis.call('EXPIRE', KEYS[i], ttl) end
local v = redis.call('HMGET', c, 'finished', 'candidates', 'cost', 'cost_unknown',
  'low_yield_streak', 'failure_streak')
return {flags, v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0', v[5] or '0', v[6] or '0',
  redis.call('SCARD', KEYS[2])}
",
    )
});
