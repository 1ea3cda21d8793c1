//! The Lua scripts of the Redis coordinator. Each runs atomically on the
//! server; the keys of one script share one hash tag, so each runs on one
//! node of a Redis Cluster.
//!
//! Directory scripts take `KEYS` = the record, its holders, its leases, its
//! fence counter and the generation last deleted (`P:{dir:NAME}`,
//! `…:holders`, `…:leases`, `…:fence`, `…:gone`),
//! and start with `ARGV` = the time before which larder's own leases do not
//! expire (a restarted Redis gives every host one lease to renew) and when
//! the command was sent (both server time, space-separated), the
//! holders their own hosts found dead (JSON array of keys), and the lease in
//! milliseconds. They return `{status, record}`, the record being the two
//! `HGETALL`s of the record and its holders, or false.

/// What every directory script starts with.
const PRELUDE: &str = r#"
local rec, holders, leases, fencekey, gonekey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace, sent = string.match(ARGV[1], '^(%-?%d+) (%-?%d+)$')
local lease = tonumber(ARGV[3])
-- A command that waited in the server's queue past a quarter lease (a
-- CLIENT PAUSE, a stall) lets no process's lease run out: its holders'
-- renewals waited in the same queue.
local expiring = now >= tonumber(grace) and now - tonumber(sent) <= lease / 4
local dead = {}
for _, k in ipairs(cjson.decode(ARGV[2])) do dead[k] = true end

local function num(n) return string.format('%.0f', n) end

-- Whether a lease of the holder `key` that ends at `score` has run out:
-- tokens' at their own time, larder's own (processes) only after the grace.
local function ran_out(key, score)
  if not score or tonumber(score) > now then return false end
  return expiring or string.sub(key, 1, 6) == 'token:'
end

-- Drops holders their host found dead, and those whose lease ran out.
local function reap()
  for k in pairs(dead) do
    redis.call('HDEL', holders, k)
    redis.call('ZREM', leases, k)
  end
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'WITHSCORES')
  for i = 1, #due, 2 do
    if ran_out(due[i], due[i + 1]) then
      redis.call('HDEL', holders, due[i])
      redis.call('ZREM', leases, due[i])
    end
  end
end

-- Whether the build or deletion under way still has its grant.
local function grant_alive()
  local g = redis.call('HMGET', rec, 'grant_key', 'grant_expires')
  if not g[1] or dead[g[1]] then return false end
  return not ran_out(g[1], g[2])
end

-- The next fencing token: past every earlier one of this directory, and
-- past the clock, so a counter lost with a restarted Redis starts later.
local function next_fence()
  local f = redis.call('INCR', fencekey)
  if f < now then
    f = now
    redis.call('SET', fencekey, num(f))
  end
  redis.call('PERSIST', fencekey)
  return f
end

local function load()
  if redis.call('EXISTS', rec) == 0 then return false end
  return {redis.call('HGETALL', rec), redis.call('HGETALL', holders)}
end
"#;

/// `ARGV[4..]` = holder key, holder JSON, hold TTL, path, recipe hash,
/// recipe, meta JSON, size, builder JSON, builder key, builder TTL, host.
/// The path of a new record is its creating host's copy.
/// Status: 1 created, 0 existed, `deleting`.
const ATTACH: &str = r#"
reap()
local created = 0
if redis.call('EXISTS', rec) == 1 then
  if redis.call('HGET', rec, 'state') == 'deleting' then return {'deleting', load()} end
else
  local g = next_fence()
  redis.call('HSET', rec, 'path', ARGV[7], 'generation', num(g), 'fence', num(g),
    'locked', '0', 'size', ARGV[11], 'created_at', num(now), 'meta', ARGV[10], 'state', 'ready',
    'copies', cjson.encode({[ARGV[15]] = ARGV[7]}))
  if ARGV[8] ~= '' then redis.call('HSET', rec, 'recipe_hash', ARGV[8], 'recipe', ARGV[9]) end
  if ARGV[12] ~= '' then
    redis.call('HSET', rec, 'state', 'building', 'grant', ARGV[12], 'grant_key', ARGV[13],
      'grant_expires', num(now + tonumber(ARGV[14])))
  end
  created = 1
end
local entry = redis.call('HGET', holders, ARGV[4])
local since = entry and string.match(entry, '^(%d+) ') or num(now)
redis.call('HSET', holders, ARGV[4], since .. ' ' .. ARGV[5])
redis.call('ZADD', leases, num(now + tonumber(ARGV[6])), ARGV[4])
return {created, load()}
"#;

/// `ARGV[4]` = holder key.
const DETACH: &str = r#"
redis.call('HDEL', holders, ARGV[4])
redis.call('ZREM', leases, ARGV[4])
reap()
return {0, load()}
"#;

const GET: &str = r#"
reap()
return {0, load()}
"#;

const PEEK: &str = r#"
return {0, load()}
"#;

/// `ARGV[4]` = `0` or `1`.
const SET_LOCKED: &str = r#"
if redis.call('EXISTS', rec) == 1 then redis.call('HSET', rec, 'locked', ARGV[4]) end
reap()
return {0, load()}
"#;

/// `ARGV[4]` = a JSON object of entries to add or replace.
const INSERT_META: &str = r#"
if redis.call('EXISTS', rec) == 0 then return {0, false} end
local meta = cjson.decode(redis.call('HGET', rec, 'meta') or '{}')
for k, v in pairs(cjson.decode(ARGV[4])) do meta[k] = v end
redis.call('HSET', rec, 'meta', cjson.encode(meta))
reap()
return {0, load()}
"#;

/// `ARGV[4]` = the keys to remove, a JSON list.
const REMOVE_META: &str = r#"
if redis.call('EXISTS', rec) == 0 then return {0, false} end
local meta = cjson.decode(redis.call('HGET', rec, 'meta') or '{}')
for _, k in ipairs(cjson.decode(ARGV[4])) do meta[k] = nil end
if next(meta) == nil then
  redis.call('HSET', rec, 'meta', '{}')
else
  redis.call('HSET', rec, 'meta', cjson.encode(meta))
end
reap()
return {0, load()}
"#;

/// `ARGV[4..]` = generation, host, path. Status: 1 recorded (or the host
/// had a copy already), 0 the directory is gone, another or being deleted.
const ADD_COPY: &str = r#"
reap()
local r = redis.call('HMGET', rec, 'generation', 'state', 'copies')
if not r[1] or r[1] ~= ARGV[4] or r[2] == 'deleting' then return {0, false} end
local copies = cjson.decode(r[3] or '{}')
if not copies[ARGV[5]] then
  copies[ARGV[5]] = ARGV[6]
  redis.call('HSET', rec, 'copies', cjson.encode(copies))
end
return {1, load()}
"#;

/// `ARGV[4..]` = deleter key, deleter JSON, grant TTL, force (`0`/`1`).
/// Status: 1 granted.
const BEGIN_DELETE: &str = r#"
reap()
if redis.call('EXISTS', rec) == 0 then return {0, false} end
local state = redis.call('HGET', rec, 'state')
local nobody = redis.call('HLEN', holders) == 0
local locked = redis.call('HGET', rec, 'locked') == '1'
local force = ARGV[7] == '1'
local free
if state == 'deleting' then
  free = (not grant_alive()) or redis.call('HGET', rec, 'grant_key') == ARGV[4]
elseif state == 'building' then
  free = force or ((not grant_alive()) and nobody and not locked)
elseif state == 'failed' then
  free = force or nobody
else
  free = force or (nobody and not locked)
end
if not free then return {0, load()} end
redis.call('HSET', rec, 'state', 'deleting', 'fence', num(next_fence()), 'grant', ARGV[5],
  'grant_key', ARGV[4], 'grant_expires', num(now + tonumber(ARGV[6])))
return {1, load()}
"#;

/// `ARGV[4]` = the deletion's fence. Status: the generation dropped, or 0.
const FINISH_DELETE: &str = r#"
local r = redis.call('HMGET', rec, 'state', 'fence', 'generation')
if r[1] ~= 'deleting' or r[2] ~= ARGV[4] then return {0, false} end
redis.call('DEL', rec, holders, leases)
-- Kept a day for the next directory of this name; past that, the clock
-- floor of next_fence keeps fences growing.
redis.call('PEXPIRE', fencekey, 86400000)
-- Kept a day too: other hosts delete their copies of it once they see it.
redis.call('SET', gonekey, r[3], 'PX', 86400000)
return {tonumber(r[3]), false}
"#;

/// `ARGV[4..]` = builder key, builder JSON, grant TTL. Status: 1 granted.
const CLAIM_BUILD: &str = r#"
reap()
if redis.call('EXISTS', rec) == 0 then return {0, false} end
local state = redis.call('HGET', rec, 'state')
local free = state == 'failed' or (state == 'building'
  and (redis.call('HGET', rec, 'grant_key') == ARGV[4] or not grant_alive()))
if not free then return {0, load()} end
redis.call('HDEL', rec, 'failure', 'progress')
-- A build anew: no host's copy is of it until its builder records its own.
redis.call('HSET', rec, 'copies', '{}')
redis.call('HSET', rec, 'state', 'building', 'fence', num(next_fence()), 'grant', ARGV[5],
  'grant_key', ARGV[4], 'grant_expires', num(now + tonumber(ARGV[6])))
return {1, load()}
"#;

/// `ARGV[4..]` = fence, builder key, `ready` or `failed`, the error.
/// Status: 1 done, 0 fenced off.
const FINISH_BUILD: &str = r#"
local g = redis.call('HMGET', rec, 'state', 'fence', 'grant_key')
if g[1] ~= 'building' or g[2] ~= ARGV[4] or g[3] ~= ARGV[5] then return {0, false} end
redis.call('HDEL', rec, 'grant', 'grant_key', 'grant_expires', 'progress')
if ARGV[6] == 'failed' then
  redis.call('HSET', rec, 'state', 'failed', 'failure', ARGV[7])
else
  redis.call('HSET', rec, 'state', 'ready')
end
return {1, false}
"#;

/// `ARGV[4..]` = fence, holder key, grant TTL, progress JSON (empty to only
/// renew). Status: 1 renewed, 0 the grant is lost.
const RENEW_GRANT: &str = r#"
local g = redis.call('HMGET', rec, 'state', 'fence', 'grant_key')
if (g[1] ~= 'building' and g[1] ~= 'deleting') or g[2] ~= ARGV[4] or g[3] ~= ARGV[5] then
  return {0, false}
end
if ARGV[7] ~= '' then
  if g[1] ~= 'building' then return {0, false} end
  redis.call('HSET', rec, 'progress', ARGV[7])
end
redis.call('HSET', rec, 'grant_expires', num(now + tonumber(ARGV[6])))
return {1, false}
"#;

/// The host agent's renewal of one hold. `ARGV[4..]` = holder key, holder
/// JSON, hold TTL, the generation held. Status: 1 renewed, 2 added again
/// (its lease had run out, but the directory is the same and not being
/// deleted), 0 the directory is gone or another one.
const RENEW_HOLD: &str = r#"
local r = redis.call('HMGET', rec, 'generation', 'state')
if not r[1] or r[1] ~= ARGV[7] then return {0, false} end
local status = 1
if redis.call('HEXISTS', holders, ARGV[4]) == 0 then
  if r[2] == 'deleting' then return {0, false} end
  redis.call('HSET', holders, ARGV[4], num(now) .. ' ' .. ARGV[5])
  status = 2
end
redis.call('ZADD', leases, num(now + tonumber(ARGV[6])), ARGV[4])
return {status, false}
"#;

/// Scripts over the `{coord}` keys: the directory index, the pools, the
/// hosts' leases and what each host holds.
///
/// `KEYS[1]` = the index (name → the latest generation); `ARGV` = name,
/// generation. Records a generation unless a later one is there.
pub const INDEX_SET: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or tonumber(v) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"#;

/// `KEYS[1]` = the index; `ARGV` = name, generation. Drops the entry only if
/// it is still that generation: a newer directory of the name stays listed.
pub const INDEX_DEL: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"#;

/// `KEYS` = the pools' state, the hosts' leases. Returns the state (or
/// false), its version, the server's time and the hosts' leases.
pub const POOL_READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'state', 'version')
return {s[1] or false, s[2] or '0', string.format('%.0f', now), redis.call('HGETALL', KEYS[2])}
"#;

/// `KEYS[1]` = the pools' state; `ARGV` = the version it was read at, the
/// new state. 1 if stored, 0 if another change got in first.
pub const POOL_WRITE: &str = r#"
if (redis.call('HGET', KEYS[1], 'version') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"#;

/// `KEYS` = the hosts' leases, this host's holds; `ARGV` = this host's
/// field, the lease, then field and entry pairs to record. Renews the host's
/// lease (by the server's clock) and records the holds.
pub const REGISTER: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + tonumber(ARGV[2])))
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"#;

/// The directory scripts, each with the prelude.
#[derive(Debug)]
pub struct DirScripts {
    pub attach: redis::Script,
    pub detach: redis::Script,
    pub get: redis::Script,
    pub peek: redis::Script,
    pub set_locked: redis::Script,
    pub insert_meta: redis::Script,
    pub remove_meta: redis::Script,
    pub begin_delete: redis::Script,
    pub finish_delete: redis::Script,
    pub claim_build: redis::Script,
    pub finish_build: redis::Script,
    pub renew_grant: redis::Script,
    pub renew_hold: redis::Script,
    pub add_copy: redis::Script,
}

impl DirScripts {
    pub fn new() -> DirScripts {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        DirScripts {
            attach: script(ATTACH),
            detach: script(DETACH),
            get: script(GET),
            peek: script(PEEK),
            set_locked: script(SET_LOCKED),
            insert_meta: script(INSERT_META),
            remove_meta: script(REMOVE_META),
            begin_delete: script(BEGIN_DELETE),
            finish_delete: script(FINISH_DELETE),
            claim_build: script(CLAIM_BUILD),
            finish_build: script(FINISH_BUILD),
            renew_grant: script(RENEW_GRANT),
            renew_hold: script(RENEW_HOLD),
            add_copy: script(ADD_COPY),
        }
    }
}
