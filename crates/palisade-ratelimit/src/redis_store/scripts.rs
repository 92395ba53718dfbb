//! The Lua scripts of the Redis store.

/// Prefixes a script with what every one of ours starts with: effects
/// replication (for Redis before 5, where `TIME` and writes cannot mix
/// otherwise) and `now` in microseconds, from Redis `TIME` when ARGV[1] is
/// 0, else from ARGV[1].
macro_rules! with_now {
    ($body:literal) => {
        concat!(
            r"
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
",
            $body
        )
    };
}

/// GCRA for several keys at once, all-or-nothing, in microseconds (Lua
/// numbers are doubles: microseconds since the epoch stay exact, nanoseconds
/// would not).
///
/// KEYS: one per check. ARGV[1]: now in µs, or 0 to read Redis `TIME`;
/// then four per check: emission µs, burst, cost, enforced (0/1). Every
/// check that fits is charged when the request passes. Returns {passes, then per check: allowed, remaining, reset µs,
/// retry-after µs}.
pub(super) const GCRA_SCRIPT: &str = with_now!(
    r"
local n = #KEYS
local tats, news, allowed = {}, {}, {}
local passes = 1
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local emission = tonumber(ARGV[base + 1])
  local burst = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local enforced = ARGV[base + 4] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + emission * cost
  allowed[i] = (news[i] - now) <= emission * burst
  if enforced and not allowed[i] then passes = 0 end
end
local out = {passes}
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local emission = tonumber(ARGV[base + 1])
  local burst = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 3])
  local tolerance = emission * burst
  local level = tats[i]
  local retry = 0
  if allowed[i] and passes == 1 then
    redis.call('SET', KEYS[i], news[i], 'PX', math.ceil((news[i] - now) / 1000) + 1)
    level = news[i]
  elseif not allowed[i] then
    if emission * cost > tolerance then
      retry = (tats[i] - now) + emission * burst
    else
      retry = news[i] - now - tolerance
    end
  end
  local ok = 0
  if allowed[i] then ok = 1 end
  table.insert(out, ok)
  table.insert(out, math.floor((tolerance - (level - now)) / emission))
  table.insert(out, level - now)
  table.insert(out, retry)
end
return out
"
);

/// Gives back `ARGV[2]` µs of a key's TAT (not below now). ARGV[1] as above.
pub(super) const REFUND_SCRIPT: &str = with_now!(
    r"
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local back = tat - tonumber(ARGV[2])
if back <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], back, 'PX', math.ceil((back - now) / 1000) + 1)
end
return 1
"
);
