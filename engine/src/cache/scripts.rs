//! The Lua scripts the read cache runs in Redis: one round trip each for a
//! lookup, a conditional store and a version move (see the parent module for
//! the key scheme they implement).

/// Lua helpers of every script: versions are compared as decimal strings (by
/// length, then by digits), never as Lua numbers, which are doubles and would
/// take two WAL positions above 2^53 for one. Anything that is not digits
/// (absent, false, garbage) counts as `0`.
const DIGITS_LUA: &str = r"
local function digits(s)
  if s and string.match(s, '^%d+$') then return s end
  return '0'
end
local function above(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
";

/// Lua shared by [`LOOKUP_SCRIPT`] and [`STORE_SCRIPT`] (after [`DIGITS_LUA`]):
/// reads the server marker (`KEYS[1]`) and the version, the largest of the
/// version keys `KEYS[2..]` (0 when all are absent), kept as stored, and lists
/// the version keys that are absent in `missing`.
const READ_VERSION_LUA: &str = r"
local marker = redis.call('GET', KEYS[1]) or ''
local v = '0'
local missing = {}
for i = 2, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  if not raw then table.insert(missing, KEYS[i]) end
  local s = digits(raw)
  if above(s, v) then v = s end
end
";

/// After [`READ_VERSION_LUA`], reads the value stored under that version in the
/// same round trip. `ARGV[1]` is the value key's prefix, `ARGV[2]` the query
/// hash. Returns `{version, value or false, marker, missing version keys}`.
const LOOKUP_SCRIPT: &str = r"
local value = redis.call('GET', ARGV[1] .. ':' .. v .. ':' .. ARGV[2])
return {v, value, marker, missing}
";

/// After [`READ_VERSION_LUA`], stores a computed answer only if the version and
/// the server marker are still those it was computed under (a write, a bulk
/// invalidation or a `FLUSHALL` meanwhile makes it worthless). `ARGV`: entry key,
/// value, TTL seconds, expected version, expected marker. Returns 1 if stored.
const STORE_SCRIPT: &str = r"
if v ~= ARGV[4] or marker ~= ARGV[5] then return 0 end
redis.call('SET', ARGV[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Moves every version key in `KEYS` forward after a write (after
/// [`DIGITS_LUA`]). `ARGV[1]` is the write's WAL position as a decimal number:
/// a key below it is set to it (concurrent writes leave the highest). An empty
/// `ARGV[1]` (no position: SQLite) takes the next number of the sequence
/// `ARGV[2]`, above every key it moves, and sets every key to it; so any move of
/// any key gives a number no version had before. A key that starts with
/// `ARGV[4]` (one customer's) expires `ARGV[3]` seconds after it was last moved,
/// so customers read or written once do not stay in Redis forever (a version
/// key found absent is started above every version again before it is used).
const BUMP_SCRIPT: &str = r"
local target = ARGV[1]
if target == '' then
  local n = digits(redis.call('GET', ARGV[2]))
  for _, key in ipairs(KEYS) do
    local current = digits(redis.call('GET', key))
    if above(current, n) then n = current end
  end
  target = string.format('%d', tonumber(n) + 1)
  redis.call('SET', ARGV[2], target)
end
for _, key in ipairs(KEYS) do
  if above(target, digits(redis.call('GET', key))) then
    if string.sub(key, 1, #ARGV[4]) == ARGV[4] then
      redis.call('SET', key, target, 'EX', ARGV[3])
    else
      redis.call('SET', key, target)
    end
  end
end
return 0
";

/// The three scripts, each with its helpers prepended (and its SHA-1 computed
/// once, so calls are `EVALSHA`).
pub(super) struct Scripts {
    /// [`LOOKUP_SCRIPT`]: the version and the entry under it.
    pub(super) lookup: redis::Script,
    /// [`STORE_SCRIPT`]: stores a computed answer if nothing moved meanwhile.
    pub(super) store: redis::Script,
    /// [`BUMP_SCRIPT`]: moves version keys forward after a write.
    pub(super) bump: redis::Script,
}

impl Scripts {
    /// Builds the scripts. Runs once per enabled cache, at start-up.
    pub(super) fn new() -> Self {
        Self {
            lookup: redis::Script::new(&format!("{DIGITS_LUA}{READ_VERSION_LUA}{LOOKUP_SCRIPT}")),
            store: redis::Script::new(&format!("{DIGITS_LUA}{READ_VERSION_LUA}{STORE_SCRIPT}")),
            bump: redis::Script::new(&format!("{DIGITS_LUA}{BUMP_SCRIPT}")),
        }
    }
}
