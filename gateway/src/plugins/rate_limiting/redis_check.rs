//! The rate-limiting check in Redis: one script call (one `EVALSHA` round trip)
//! per request that checks every period and counts the request only if it passes.

use std::sync::Arc;

use crate::plugins::redis_link::{LinkError, RedisLink};

use super::store::{Outcome, PeriodCheck, Usage};

/// Counts the request in every period, and takes the counts back if any period was
/// already full, so refused requests are not counted. Keys: per period the current
/// and the previous window's counter. Args: per period the limit, the time to live
/// and the previous window's weight. Returns the admission flag, then per period the
/// current and previous counts before this request. The expiry is set by the same
/// atomic script call as the first increment.
const CHECK_AND_COUNT: &str = r#"
local n = #KEYS / 2
local out = {1}
for i = 1, n do
  local cur = redis.call('INCR', KEYS[2*i-1])
  if cur == 1 then redis.call('EXPIRE', KEYS[2*i-1], ARGV[3*i-1]) end
  cur = cur - 1
  local w = tonumber(ARGV[3*i])
  local prev = 0
  if w > 0 then prev = tonumber(redis.call('GET', KEYS[2*i]) or '0') end
  if cur + math.ceil(prev * w) >= tonumber(ARGV[3*i-2]) then out[1] = 0 end
  out[2*i] = cur
  out[2*i+1] = prev
end
if out[1] == 0 then
  for i = 1, n do redis.call('DECR', KEYS[2*i-1]) end
end
return out
"#;

/// The script (its SHA-1 computed once per process), for the links to load when
/// they connect and for every check.
pub fn script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(CHECK_AND_COUNT))
}

/// Checks and counts one request in Redis; runs in the access phase. An error means
/// the request was not counted in Redis.
pub async fn check(link: &Arc<RedisLink>, checks: &[PeriodCheck]) -> Result<Outcome, LinkError> {
    let mut invocation = script().prepare_invoke();
    for c in checks {
        invocation.key(&c.key);
        invocation.key(c.previous_key.as_deref().unwrap_or(&c.key));
    }
    for c in checks {
        invocation.arg(c.limit);
        invocation.arg(c.ttl_seconds);
        invocation.arg(format!("{:.6}", c.previous_weight));
    }
    let values: Vec<i64> = link
        .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
        .await?;
    if values.len() != 1 + 2 * checks.len() {
        return Err(LinkError::Command {
            server: link.settings().describe(),
            message: format!("unexpected script reply of {} values", values.len()),
        });
    }
    let usage = values[1..]
        .chunks(2)
        .map(|p| Usage {
            current: p[0].max(0) as u64,
            previous: p[1].max(0) as u64,
        })
        .collect();
    Ok(Outcome {
        admitted: values[0] == 1,
        usage,
    })
}
