//! What a Redis must be before clustered mode uses it, checked at start on
//! every master: an eviction policy that never drops a key (any other can
//! silently take a document's op log, dedupe marks or epoch: edits applied
//! twice, histories forked), and, for `DURABILITY=strict`, an ack that
//! survives a power loss (`appendfsync always`, or `WAIT` on replicas).
//! Must not import: axum, sqlx, the hub.

use redis::Value;

use super::conn::Conn;
use super::BusError;

/// Every string in a reply (a node's `INFO` text, a `CONFIG GET` list or
/// map), in order.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::VerbatimString { text, .. } => out.push(text.clone()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

/// The value of `field:` in an `INFO` text.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// Each master's `maxmemory_policy`.
async fn eviction_policies(conn: &mut Conn) -> Result<Vec<String>, BusError> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("memory");
    let replies = conn
        .on_each_master(cmd)
        .await
        .map_err(|e| BusError::Unavailable(e.to_string()))?;
    let mut texts = Vec::new();
    replies.iter().for_each(|r| strings(r, &mut texts));
    Ok(texts
        .iter()
        .filter_map(|t| info_field(t, "maxmemory_policy").map(str::to_owned))
        .collect())
}

/// `CONFIG GET name` on every master: each one's value, or `None` where
/// CONFIG is not allowed (managed services rename or forbid it).
async fn config_values(conn: &mut Conn, name: &str) -> Option<Vec<String>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let replies = conn.on_each_master(cmd).await.ok()?;
    let mut out = Vec::new();
    replies.iter().for_each(|r| strings(r, &mut out));
    let values: Vec<String> = out
        .chunks(2)
        .filter(|kv| kv.len() == 2 && kv[0] == name)
        .map(|kv| kv[1].clone())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Refuse a Redis that would lose acknowledged state silently.
pub(super) async fn check_server(
    conn: &mut Conn,
    strict: bool,
    wait_replicas: u32,
) -> Result<(), BusError> {
    let policies = eviction_policies(conn).await?;
    if policies.is_empty() {
        return Err(BusError::Config(
            "INFO memory names no maxmemory_policy: cannot check that Redis never evicts".into(),
        ));
    }
    if let Some(p) = policies.iter().find(|p| p.as_str() != "noeviction") {
        return Err(BusError::Config(format!(
            "Redis maxmemory-policy is {p}; set it to noeviction (with maxmemory for a bound): \
             any other policy may evict a document's op log, dedupe marks or epoch, \
             and then edits apply twice or histories fork"
        )));
    }
    if !strict || wait_replicas > 0 {
        return Ok(());
    }
    let needs = "DURABILITY=strict needs every Redis master at appendonly yes with \
                 appendfsync always, or REDIS_WAIT_REPLICAS of 1 or more";
    let (Some(aof), Some(fsync)) = (
        config_values(conn, "appendonly").await,
        config_values(conn, "appendfsync").await,
    ) else {
        return Err(BusError::Config(format!(
            "{needs}; CONFIG GET is not allowed on this Redis, so set REDIS_WAIT_REPLICAS"
        )));
    };
    if aof.iter().any(|v| v != "yes") || fsync.iter().any(|v| v != "always") {
        return Err(BusError::Config(format!(
            "{needs}; found appendonly {} and appendfsync {}",
            aof.join(","),
            fsync.join(",")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name() {
        let info =
            "# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(info_field(info, "maxmemory_policy"), Some("allkeys-lru"));
        assert_eq!(info_field(info, "maxmemory"), Some("0"));
        assert_eq!(info_field(info, "nothing"), None);
    }
}
