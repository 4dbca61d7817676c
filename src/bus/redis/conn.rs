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
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
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

    /// `WAIT replicas timeout` on the connection that wrote `key`'s slot:
    /// how many replicas acknowledged every write this connection sent
    /// before it (ours among them).
    pub(super) async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => {
                let route =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                let v = c.route_command(cmd, RoutingInfo::SingleNode(route)).await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }

    /// Run `cmd` on every master (keyspace scans and deletes in a cluster;
    /// the one server otherwise), each reply in a list.
    pub(super) async fn on_every_master(&mut self, cmd: Cmd) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(c) => Ok(vec![cmd.query_async(c).await?]),
            Self::Cluster(c) => {
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::CombineArrays),
                        )),
                    )
                    .await?;
                Ok(vec![v])
            }
        }
    }
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
