//! Which Redis this backend talks to, and how: one server (a reconnecting
//! multiplexed [`ConnectionManager`]) or a Redis Cluster (the `redis`
//! crate's async cluster client, which follows MOVED/ASK and refreshes its
//! slot map). [`Conn`] is either, as one `ConnectionLike`, so every command
//! and script above it is written once; scripts route by their first key,
//! and every document's keys share its hash tag, so a script runs on the
//! master that owns the document.
//! Must not import: axum, sqlx, the hub.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where the servers are: `REDIS_URL` as one URL, or (with `REDIS_CLUSTER`)
/// a comma-separated list of seed nodes of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    Single(String),
    Cluster(Vec<String>),
}

impl Topology {
    /// Read `url` as one server, or as the cluster's seed list. A list
    /// without `cluster` is refused: it would silently use only one node.
    pub fn parse(url: &str, cluster: bool) -> Result<Self, String> {
        let nodes: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        match (nodes.len(), cluster) {
            (0, _) => Err("REDIS_URL is empty".into()),
            (1, false) => Ok(Self::Single(nodes[0].clone())),
            (_, false) => Err("REDIS_URL lists several nodes: set REDIS_CLUSTER=true".into()),
            (_, true) => Ok(Self::Cluster(nodes)),
        }
    }

    /// The cluster client builder shared by commands and pub/sub.
    pub(super) fn cluster_builder(nodes: &[String]) -> ClusterClientBuilder {
        ClusterClient::builder(nodes.to_vec())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .retries(6)
    }
}

/// The command connection: one server's or the cluster's.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn open(topology: &Topology) -> RedisResult<Self> {
        match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(2);
                Ok(Self::Single(
                    client.get_connection_manager_with_config(cfg).await?,
                ))
            }
            Topology::Cluster(nodes) => Ok(Self::Cluster(
                Topology::cluster_builder(nodes)
                    .build()?
                    .get_async_connection()
                    .await?,
            )),
        }
    }

    /// Read `head_key` and field `client` of `clients_key`, write
    /// `mark_key` and `WAIT replicas timeout`, as one pipeline on one
    /// connection to the master that owns their slot: the write follows
    /// every record up to that head in the master's replication stream, so
    /// the WAIT, which covers this connection's last write, covers them,
    /// whichever connection wrote them; the reads say what this node holds.
    /// A pipeline is resent whole or fails whole (a reconnect or a MOVED
    /// between its commands cannot leave a WAIT covering nothing).
    pub(super) async fn mark_and_wait(
        &mut self,
        keys: MarkKeys<'_>,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<Marked> {
        let mut pipe = Pipeline::new();
        pipe.cmd("GET")
            .arg(keys.head)
            .cmd("HGET")
            .arg(keys.clients)
            .arg(keys.client)
            .cmd("INCR")
            .arg(keys.mark)
            .ignore()
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout_ms);
        let (head, client_seq, replicas) = pipe.query_async(self).await?;
        Ok(Marked {
            head,
            client_seq,
            replicas,
        })
    }

    /// Run `cmd` on every master (keyspace scans and deletes, start-up
    /// checks), each node's reply on its own: the one server's, or a
    /// cluster's map of node to reply, its values taken (a node's error
    /// is the call's).
    pub(super) async fn on_each_master(&mut self, cmd: Cmd) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(c) => Ok(vec![cmd.query_async(c).await?]),
            Self::Cluster(c) => {
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await?;
                match v {
                    Value::Map(pairs) => pairs
                        .into_iter()
                        .map(|(_, v)| match v {
                            Value::ServerError(e) => Err(e.into()),
                            v => Ok(v),
                        })
                        .collect(),
                    other => Ok(vec![other]),
                }
            }
        }
    }
}

/// The keys of [`Conn::mark_and_wait`]: a document's head, its clients hash
/// and the field to read from it (`""`: none), and its mark.
pub(super) struct MarkKeys<'a> {
    pub head: &'a str,
    pub clients: &'a str,
    pub client: &'a str,
    pub mark: &'a str,
}

/// What [`Conn::mark_and_wait`] read, and how many replicas acknowledged.
pub(super) struct Marked {
    pub head: Option<u64>,
    /// The client's `"seq:version"` in the clients hash.
    pub client_seq: Option<String>,
    pub replicas: u32,
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn one_url_or_a_cluster_seed_list() {
        assert_eq!(
            Topology::parse("redis://a:1", false),
            Ok(Topology::Single("redis://a:1".into()))
        );
        assert_eq!(
            Topology::parse("redis://a:1, redis://b:2", true),
            Ok(Topology::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert_eq!(
            Topology::parse("redis://a:1", true),
            Ok(Topology::Cluster(vec!["redis://a:1".into()]))
        );
        assert!(Topology::parse("redis://a:1,redis://b:2", false).is_err());
        assert!(Topology::parse(" , ", true).is_err());
    }
}
