//! Configuration: one struct, read from the environment (and `.env`) or
//! flags. Secrets are wrapped so they never print.
//!
//! Owns: [`Config`] and [`Secret`]. Must not import: the hub, store or web layer.

use std::fmt;
use std::path::PathBuf;

use clap::Parser;

/// A value that must never reach a log (URLs with passwords, keys).
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// What an ack promises beyond a killed process (docs/durability.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Nothing acknowledged is lost when the process dies; a power loss
    /// may take the last moments (SQLite `synchronous=NORMAL`; Redis as
    /// configured).
    Standard,
    /// Nothing acknowledged is lost to a power loss either: SQLite
    /// `synchronous=FULL`; Redis must run `appendonly yes` with
    /// `appendfsync always` on every master, or `REDIS_WAIT_REPLICAS` ≥ 1
    /// (checked at start).
    Strict,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Tandem server settings. Every flag can be set by the environment
/// variable named beside it; `.env` in the working directory is read first.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = "Real-time collaborative editing server"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// PostgreSQL URL (postgres://user:password@host:port/db); unset: the
    /// embedded SQLite store under DATA_DIR. Its value never prints.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Most PostgreSQL connections per instance.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// PostgreSQL statement timeout (ms).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub db_statement_timeout_ms: u64,
    /// Redis URL (redis://[:password@]host:port[/db]), or with
    /// REDIS_CLUSTER a comma-separated list of the cluster's seed nodes;
    /// unset: the in-process sequencer and bus (single node). Its value
    /// never prints.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// REDIS_URL names a Redis Cluster (7+): scripts run on the master
    /// owning each document's slot, document channels use sharded pub/sub.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,
    /// Replicas that must hold an edit before it is acked or shown to
    /// anyone (Redis WAIT on the commit path; 0: ack on the master's
    /// word, as plain Redis replication does). See docs/durability.md.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long one WAIT may take (ms) before the edit is refused as
    /// unavailable and retried: 1 to 1500 (under the 2 s a Redis reply may
    /// take, though WAITs sharing a connection queue behind each other; 0,
    /// which WAIT reads as "forever", is refused).
    #[arg(long, env = "REDIS_WAIT_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1500))]
    pub redis_wait_timeout_ms: u64,
    /// Prefix of every Redis key and channel (separates deployments).
    #[arg(long, env = "REDIS_PREFIX", default_value = "tandem")]
    pub redis_prefix: String,
    /// Clustered: one instance at a time commits each document's edits
    /// (it holds the document's commit lease in Redis, and Redis refuses
    /// any other's round); the others forward their clients' edits to it.
    /// Off: every instance commits its own, racing the others.
    #[arg(long, env = "COMMIT_LEADER", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub commit_leader: bool,
    /// How long a document's commit lease lasts without a commit or a
    /// renewal (ms), 500 to 30000: the longest an edit waits for a leader
    /// that died.
    #[arg(long, env = "LEADER_LEASE_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(500..=30_000))]
    pub leader_lease_ms: u64,
    /// Committed ops kept in each document's Redis op log (never trimmed
    /// past the last durable snapshot).
    #[arg(long, env = "OPLOG_RETAIN", default_value_t = 10_000)]
    pub oplog_retain: usize,
    /// Bytes of record JSON kept in each document's Redis op log (never
    /// trimmed past the last durable snapshot; the newest record always
    /// stays).
    #[arg(long, env = "OPLOG_RETAIN_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub oplog_retain_bytes: usize,
    /// Users of a vanished instance disappear for everyone within this (ms).
    #[arg(long, env = "PRESENCE_TTL_MS", default_value_t = 30_000)]
    pub presence_ttl_ms: u64,
    /// Directory for the embedded store.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// What an ack promises: `standard` (a killed process loses nothing
    /// acknowledged) or `strict` (a power loss neither; slower commits).
    /// See docs/durability.md.
    #[arg(long, env = "DURABILITY", value_enum, default_value_t = Durability::Standard)]
    pub durability: Durability,
    /// The most bytes the embedded SQLite file may hold (0: as many as the
    /// disk has). Past it, writes fail as on a full disk: edits are refused
    /// (`storage_unavailable`) until room is made.
    #[arg(long, env = "SQLITE_MAX_BYTES", default_value_t = 0)]
    pub sqlite_max_bytes: u64,
    /// This instance's id (default: random); appears in presence and logs.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Snapshot period for changed documents, in milliseconds.
    #[arg(long, env = "SNAPSHOT_INTERVAL_MS", default_value_t = 2000)]
    pub snapshot_interval_ms: u64,
    /// Accept `?user_id=&name=` instead of a token (demos and tests only).
    #[arg(long, env = "ALLOW_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,
    /// HS256 signing secret for tokens (at least 32 bytes). Unset in
    /// embedded mode: generated once and kept in DATA_DIR/jwt_secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// The previous secret, still accepted after a rotation.
    #[arg(long, env = "JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<Secret>,
    /// Issuer (`iss`) written into tokens and required of them.
    #[arg(long, env = "JWT_ISSUER", default_value = "tandem")]
    pub jwt_issuer: String,
    /// Audience (`aud`) written into tokens and required of them.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "tandem")]
    pub jwt_audience: String,
    /// Token lifetime in seconds.
    #[arg(long, env = "TOKEN_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub token_ttl_secs: i64,
    /// How long (ms) an instance may reuse a token's revocation check
    /// (per user and token) instead of asking the database again. A
    /// revocation clears it on every instance at once (bus event); this
    /// only bounds how late an instance that missed the event (pub/sub
    /// down) still honours a revoked token. 0: ask on every request.
    #[arg(long, env = "TOKEN_CHECK_CACHE_MS", default_value_t = 5_000)]
    pub token_check_cache_ms: u64,
    /// How long a WebSocket ticket (`POST /api/auth/ws-ticket`) may wait to
    /// be redeemed, once, on any instance.
    #[arg(long, env = "WS_TICKET_TTL_MS", default_value_t = 30_000)]
    pub ws_ticket_ttl_ms: u64,
    /// Revoked tokens (logouts) kept per user before a further logout
    /// revokes every token of that user issued until then instead.
    #[arg(long, env = "MAX_REVOKED_TOKENS_PER_USER", default_value_t = 1_000)]
    pub max_revoked_tokens_per_user: i64,
    /// Browser origins allowed to open WebSockets (comma-separated), besides
    /// the server's own origin. Requests without an Origin header (non-browser
    /// clients) are not affected.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Largest REST request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// A request body must arrive within this time of its headers (ms),
    /// plus one second per BODY_MIN_BYTES_PER_SEC bytes received, with no
    /// silence longer than this; past it the request is answered 408 and
    /// its bytes released.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
    /// The slowest a request body may arrive, on average, once its first
    /// BODY_READ_TIMEOUT_MS are spent (bytes per second).
    #[arg(long, env = "BODY_MIN_BYTES_PER_SEC", default_value_t = 4096)]
    pub body_min_bytes_per_sec: u64,
    /// Bytes of request bodies held at once, by all requests together (one
    /// client address at most a quarter, or the largest body if more); a
    /// body that finds no room within a second is answered 503. At least
    /// the largest body (MAX_BODY_BYTES, or an import's 4 bytes per
    /// MAX_DOC_CHARS).
    #[arg(long, env = "BODY_BUDGET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub body_budget_bytes: usize,
    /// Login attempts per minute from one client address, and for one
    /// username from one address (a burst of as many). Shared by every
    /// instance through Redis when REDIS_URL is set.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MIN", default_value_t = 10)]
    pub login_attempts_per_min: u32,
    /// Login attempts at one account per hour, from every address together,
    /// after a first LOGIN_ACCOUNT_BURST: a guesser spread over many
    /// addresses is slowed. A browser that signed in to the account before
    /// (its device cookie) is exempt, so strangers cannot lock the owner out.
    #[arg(long, env = "LOGIN_ACCOUNT_ATTEMPTS_PER_HOUR", default_value_t = 30)]
    pub login_account_attempts_per_hour: u32,
    /// Login attempts at one account allowed at once before it is slowed.
    #[arg(long, env = "LOGIN_ACCOUNT_BURST", default_value_t = 50)]
    pub login_account_burst: u32,
    /// Accounts one client address may create per hour (shared through
    /// Redis when REDIS_URL is set).
    #[arg(long, env = "REGISTRATIONS_PER_HOUR", default_value_t = 20)]
    pub registrations_per_hour: u32,
    /// Password hashes (Argon2id, ~19 MiB each) computed at once; 0: one
    /// per CPU. Requests beyond wait, at most PASSWORD_HASH_QUEUE of them.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", default_value_t = 0)]
    pub password_hash_concurrency: usize,
    /// Requests that may wait for a password hash; more get 503.
    #[arg(long, env = "PASSWORD_HASH_QUEUE", default_value_t = 64)]
    pub password_hash_queue: usize,
    /// Largest WebSocket frame accepted, in bytes.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 256 * 1024)]
    pub max_frame_bytes: usize,
    /// Most components in one op.
    #[arg(long, env = "MAX_OP_COMPONENTS", default_value_t = 10_000)]
    pub max_op_components: usize,
    /// Largest document, in code points.
    #[arg(long, env = "MAX_DOC_CHARS", default_value_t = 2_000_000)]
    pub max_doc_chars: usize,
    /// Open connections from one client address: HTTP connections, and
    /// separately WebSocket sessions. Behind a proxy listed in
    /// TRUSTED_PROXIES the address is the one it forwards.
    #[arg(long, env = "MAX_CONNS_PER_IP", default_value_t = 256)]
    pub max_conns_per_ip: usize,
    /// Open WebSocket sessions of one user (all documents).
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: usize,
    /// Open connections in all (HTTP and WebSocket); past it a connection
    /// is answered 503 and closed. 0: the open-file limit less a reserve.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// A connection must send its first request's headers within this time
    /// of being accepted (silent sockets, slowloris).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose
    /// `X-Real-IP` / `X-Forwarded-For` names the client. Unset: none.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Ops per second one connection may send, sustained (also REST edits
    /// per second of one user); see OP_RATE_BURST.
    #[arg(long, env = "OP_RATE_PER_SEC", default_value_t = 100)]
    pub op_rate_per_sec: u32,
    /// Ops one connection (or one user's REST edits) may send in a burst
    /// above OP_RATE_PER_SEC.
    #[arg(long, env = "OP_RATE_BURST", default_value_t = 200)]
    pub op_rate_burst: u32,
    /// Cursor messages per second one connection may send; more are dropped.
    /// Awareness updates are limited to as many again, on their own count.
    #[arg(long, env = "CURSOR_RATE_PER_SEC", default_value_t = 20)]
    pub cursor_rate_per_sec: u32,
    /// Messages queued to one slow client before it is disconnected.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Committed ops kept in memory per document for rebasing and resume.
    #[arg(long, env = "HISTORY_RETAIN", default_value_t = 10_000)]
    pub history_retain: usize,
    /// Bytes of committed ops kept in memory per document (the newest op
    /// always stays); also the embedded sequencer's op log. A client
    /// resuming from before what is kept gets a full init.
    #[arg(long, env = "HISTORY_RETAIN_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub history_retain_bytes: usize,
    /// Most op JSON bytes in one page of `GET /api/documents/{id}/history`
    /// (at least one op per page, whatever its size).
    #[arg(long, env = "HISTORY_PAGE_BYTES", default_value_t = 1024 * 1024)]
    pub history_page_bytes: usize,
    /// Clients whose highest committed seq is kept per document (the
    /// dedupe of resent ops); beyond it the longest-silent are dropped.
    #[arg(long, env = "MAX_CLIENTS_PER_DOC", default_value_t = 10_000)]
    pub max_clients_per_doc: usize,
    /// Members one document may have (besides its owner).
    #[arg(long, env = "MAX_MEMBERS_PER_DOC", default_value_t = 1000)]
    pub max_members_per_doc: u64,
    /// Shares with someone not yet a member, per hour, per user and per
    /// client address (a burst of as many). A share with a username that
    /// has no account is answered 404, so this is also how fast anyone can
    /// learn which usernames exist; role changes of members do not count.
    #[arg(long, env = "NEW_SHARES_PER_HOUR", default_value_t = 100)]
    pub new_shares_per_hour: u32,
    /// Tags one document may carry.
    #[arg(long, env = "MAX_TAGS_PER_DOC", default_value_t = 32)]
    pub max_tags_per_doc: usize,
    /// Documents one user may own.
    #[arg(long, env = "MAX_DOCS_PER_USER", default_value_t = 1000)]
    pub max_docs_per_user: u64,
    /// Unload a document this long after its last client leaves (ms).
    #[arg(long, env = "IDLE_UNLOAD_MS", default_value_t = 30_000)]
    pub idle_unload_ms: u64,
    /// Every this many versions the server sends each client a `check`
    /// (the checksum of the text at that version; protocol extension), so a
    /// client whose text drifted notices and reloads. 0: never.
    #[arg(long, env = "CHECKSUM_EVERY", default_value_t = 100)]
    pub checksum_every: u64,
    /// Server WebSocket ping period (ms).
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 20_000)]
    pub ping_interval_ms: u64,
    /// A connection silent for this long is dropped (ms).
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 45_000)]
    pub idle_timeout_ms: u64,
    /// Log format on stderr: `pretty` (for people; coloured only when
    /// stderr is a terminal) or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// On SIGTERM, exit within this long (ms) even if clients linger.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
}

impl Config {
    /// Parse from `.env`, the environment and the command line.
    pub fn load() -> Self {
        let _ = dotenvy::dotenv();
        Config::parse()
    }

    /// Defaults only (tests build on this).
    pub fn defaults() -> Self {
        Config::parse_from(["tandem"])
    }

    /// Where this instance keeps its data, for the start-up log: the
    /// SQLite file, or the PostgreSQL and Redis servers (host, port,
    /// database; never the user or password).
    pub fn storage_summary(&self) -> (String, Option<String>) {
        let store = match &self.database_url {
            Some(url) => format!("postgresql {}", without_credentials(&url.0)),
            None => format!("sqlite {}", self.data_dir.join("tandem.db").display()),
        };
        let bus = self
            .redis_url
            .as_ref()
            .map(|url| format!("redis {}", without_credentials(&url.0)));
        (store, bus)
    }
}

/// `scheme://user:password@host:port/db?options` → `host:port/db` (each
/// of a comma-separated list).
pub fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|u| one_without_credentials(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn one_without_credentials(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_has_help_text_and_an_env_variable() {
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.trim().len() > 10, "--{id} has no help text");
            assert!(!help.starts_with("..."), "--{id}: {help}");
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }

    #[test]
    fn secrets_are_hidden_in_help() {
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let env = arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            if [
                "DATABASE_URL",
                "REDIS_URL",
                "JWT_SECRET",
                "JWT_PREVIOUS_SECRET",
            ]
            .contains(&env.as_str())
            {
                assert!(
                    arg.is_hide_env_values_set(),
                    "{env} would print its value in --help"
                );
            }
        }
    }

    #[test]
    fn a_wait_timeout_must_be_bounded_and_under_the_reply_timeout() {
        let parse =
            |t: &str| Config::try_parse_from(["tandem", &format!("--redis-wait-timeout-ms={t}")]);
        for bad in ["0", "1501", "-1", "x"] {
            let Err(e) = parse(bad) else {
                panic!("{bad} was accepted")
            };
            let e = e.to_string();
            assert!(e.contains("redis-wait-timeout-ms"), "{bad}: {e}");
        }
        assert_eq!(parse("250").unwrap().redis_wait_timeout_ms, 250);
    }

    #[test]
    fn storage_summary_names_hosts_without_credentials() {
        assert_eq!(
            without_credentials("postgres://tandem:s3cret@db.internal:5432/tandem?sslmode=require"),
            "db.internal:5432/tandem"
        );
        assert_eq!(without_credentials("redis://:pw@redis:6379"), "redis:6379");
        assert_eq!(without_credentials("redis://redis:6379/2"), "redis:6379/2");
        assert_eq!(without_credentials("redis://u:p@w@h:1"), "h:1");
        assert_eq!(
            without_credentials("redis://:pw@a:1, redis://:pw@b:2"),
            "a:1,b:2"
        );
        let mut c = Config::defaults();
        c.data_dir = "/var/lib/tandem/data".into();
        assert_eq!(
            c.storage_summary(),
            ("sqlite /var/lib/tandem/data/tandem.db".to_owned(), None)
        );
        c.database_url = Some(Secret("postgres://a:secret@pg:5432/t".into()));
        c.redis_url = Some(Secret("redis://:secret@r:6379".into()));
        let (store, bus) = c.storage_summary();
        assert_eq!(store, "postgresql pg:5432/t");
        assert_eq!(bus.as_deref(), Some("redis r:6379"));
    }
}
