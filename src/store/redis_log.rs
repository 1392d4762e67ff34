//! Append-only logs on Redis: one stream per log (one key, so any cluster
//! slot will do). Self-contained on purpose: it takes a connection and a
//! key, and knows nothing of how the connection was made.

use super::{LogAppend, LogId, LogRetention, StoreError};
use redis::aio::ConnectionLike;
use redis::{RedisError, Script};

/// Appends in one script run, so the batch is atomic and ids are assigned
/// against the stream's last id: an entry's id is its time, or the last id
/// plus one when the time is not later (a clock stepping back, or replicas
/// a few milliseconds apart). Then trims by count and by age.
///
/// KEYS[1] = stream; ARGV = max entries ('' = none), min id ms ('' = none),
/// then (ms, payload) pairs. Replies the new ids.
const APPEND: &str = r"
local last_ms, last_seq = 0, -1
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local id = info[i + 1]
      local dash = string.find(id, '-', 1, true)
      last_ms = tonumber(string.sub(id, 1, dash - 1))
      last_seq = tonumber(string.sub(id, dash + 1))
    end
  end
end
local ids = {}
for i = 3, #ARGV, 2 do
  local ms = tonumber(ARGV[i])
  local seq = 0
  if ms <= last_ms then
    ms = last_ms
    seq = last_seq + 1
  end
  local id = string.format('%d-%d', ms, seq)
  redis.call('XADD', KEYS[1], id, 'v', ARGV[i + 1])
  last_ms, last_seq = ms, seq
  ids[#ids + 1] = id
end
if ARGV[1] ~= '' then redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '=', ARGV[2]) end
return ids
";

/// The key of log `log` under `prefix`.
pub fn key(prefix: &str, log: &str) -> String {
    format!("{prefix}:log:{{{log}}}")
}

pub fn append_script() -> Script {
    Script::new(APPEND)
}

fn parse_id(id: &str) -> Result<LogId, StoreError> {
    id.parse()
        .map_err(|()| StoreError::Corrupt("redis: stream id is not ms-seq".into()))
}

/// See [`super::Store::log_append`].
pub async fn append<C: ConnectionLike>(
    conn: &mut C,
    script: &Script,
    key: &str,
    entries: &[LogAppend],
    retention: LogRetention,
) -> Result<Result<Vec<LogId>, StoreError>, RedisError> {
    let mut invocation = script.key(key);
    invocation
        .arg(
            retention
                .max_entries
                .map(|n| n.to_string())
                .unwrap_or_default(),
        )
        .arg(retention.min_ms.map(|n| n.to_string()).unwrap_or_default());
    for e in entries {
        invocation.arg(e.at_ms).arg(&e.value[..]);
    }
    let ids: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(ids.iter().map(|id| parse_id(id)).collect())
}

/// See [`super::Store::log_read`].
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    after: LogId,
    until: LogId,
    limit: usize,
) -> Result<Result<Vec<(LogId, Vec<u8>)>, StoreError>, RedisError> {
    if limit == 0 || after >= until {
        return Ok(Ok(Vec::new()));
    }
    let end = if until == LogId::MAX {
        "+".to_owned()
    } else {
        until.to_string()
    };
    let rows: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg(format!("({after}"))
        .arg(end)
        .arg("COUNT")
        .arg(limit)
        .query_async(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, mut fields)| {
            // fields = ["v", payload]
            let value = fields
                .pop()
                .filter(|_| fields.len() == 1)
                .ok_or_else(|| StoreError::Corrupt("redis: stream entry without payload".into()))?;
            Ok((parse_id(&id)?, value))
        })
        .collect())
}

/// See [`super::Store::log_len`].
pub async fn len<C: ConnectionLike>(conn: &mut C, key: &str) -> Result<u64, RedisError> {
    redis::cmd("XLEN").arg(key).query_async(conn).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_key_per_log_as_its_own_hash_tag() {
        assert_eq!(super::key("gb", "audit"), "gb:log:{audit}");
    }
}
