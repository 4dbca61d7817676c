//! A throwaway Redis Cluster: six `redis-server` processes on loopback
//! (three masters, three replicas, `redis-cli --cluster create`), each in
//! its own directory, killed on Drop. A master can be SIGKILLed (its
//! replica is promoted within about a second: `cluster-node-timeout 1000`)
//! and restarted (it rejoins as a replica), and one slot moved between
//! masters while clients use it (`CLUSTER SETSLOT … MIGRATING/IMPORTING`,
//! `MIGRATE`, `SETSLOT … NODE`).
//!
//! Must not import: `tandem_core` (Redis is driven over its ports, with
//! `redis-cli`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{require_binary, TIMEOUT};

/// Nodes in the cluster: three masters, one replica each.
pub const NODES: usize = 6;

/// A throwaway Redis Cluster on loopback.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

struct Node {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

/// A port whose cluster bus port (+10000) is free too. Both stay below
/// 32768, where Linux's ephemeral range (`ip_local_port_range`, 32768 and
/// up by default) begins: no outgoing connection of a test running
/// alongside can take one between this check and the node's bind.
fn free_pair() -> u16 {
    loop {
        let p = 20_000 + (rand::random::<u16>() % 2_700);
        let a = std::net::TcpListener::bind(("127.0.0.1", p));
        let b = std::net::TcpListener::bind(("127.0.0.1", p + 10_000));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(require_binary("redis-cli", "redis-tools"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Node {
    /// Start the node; with `may_move` (before the cluster is created), on
    /// a port another process took meanwhile it moves to a fresh one.
    fn spawn(&mut self, may_move: bool) {
        loop {
            if self.try_spawn() {
                return;
            }
            assert!(
                may_move,
                "redis-server exited at start on port {}",
                self.port
            );
            self.port = free_pair();
        }
    }

    /// Start the node and wait for it: false if it exited first.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new(require_binary("redis-server", "redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let start = Instant::now();
        // Ours answering (not another test's server on a port it took).
        let me = format!("process_id:{}", child.id());
        while !cli(self.port, &["INFO", "server"])
            .lines()
            .any(|l| l.trim() == me)
        {
            if child.try_wait().ok().flatten().is_some() {
                return false;
            }
            assert!(start.elapsed() < TIMEOUT, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        true
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

/// One line of `CLUSTER NODES`.
struct Entry {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f
                .get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = f.get(2)?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Entry {
                id: f[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Start six nodes, create the cluster and wait until it serves.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let d = dir.path().join(format!("n{i}"));
                std::fs::create_dir_all(&d).unwrap();
                Node {
                    port: free_pair(),
                    dir: d,
                    child: None,
                }
            })
            .collect();
        for n in &mut nodes {
            n.spawn(true);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = Command::new(require_binary("redis-cli", "redis-tools"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes, _dir: dir };
        c.wait_healthy();
        c
    }

    /// The seed list for `REDIS_URL` (every node).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn any_alive(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.alive())
            .expect("a live node")
            .port
    }

    fn table(&self) -> Vec<Entry> {
        parse_nodes(&cli(self.any_alive(), &["CLUSTER", "NODES"]))
    }

    /// Wait until every live node says the cluster is ok, every slot has a
    /// live master, and every live replica's link to its master is up.
    pub fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let ok = self.nodes.iter().filter(|n| n.alive()).all(|n| {
                let info = cli(n.port, &["CLUSTER", "INFO"]);
                let repl = cli(n.port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        cli(self.any_alive(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("keyslot")
    }

    /// The node (index) serving `key`'s slot as master now, if a live one
    /// does.
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let slot = self.slot_of(key);
        let table = self.table();
        let e = table.iter().find(|e| {
            e.master && !e.failed && e.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })?;
        self.nodes
            .iter()
            .position(|n| n.port == e.port && n.alive())
    }

    /// Masters with at least one slot (indices).
    pub fn masters(&self) -> Vec<usize> {
        let table = self.table();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.alive()
                    && table
                        .iter()
                        .any(|e| e.port == n.port && e.master && !e.failed && !e.slots.is_empty())
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The replica of master `i`, if it has a live one.
    pub fn replica_of(&self, i: usize) -> Option<usize> {
        let text = cli(self.any_alive(), &["CLUSTER", "NODES"]);
        let table = parse_nodes(&text);
        let id = &table.iter().find(|e| e.port == self.nodes[i].port)?.id;
        let port: u16 = text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&id.as_str()) && f.get(2)?.contains("slave"))
                .then(|| f[1].split('@').next()?.rsplit(':').next()?.parse().ok())?
        })?;
        self.nodes.iter().position(|n| n.port == port && n.alive())
    }

    /// Run a command on node `i` with `redis-cli`: its output.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        cli(self.nodes[i].port, args)
    }

    /// Send `sig` (`-STOP`, `-CONT`) to node `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        crate::signal(self.nodes[i].child.as_ref().expect("live node").id(), sig);
    }

    /// `LRANGE key 0 -1` on node `i` (`READONLY` first, so a replica
    /// answers too).
    pub fn list_on(&self, i: usize, key: &str) -> String {
        let out = Command::new(require_binary("redis-cli", "redis-tools"))
            .args(["-h", "127.0.0.1", "-p", &self.nodes[i].port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                let mut stdin = c.stdin.take().unwrap();
                writeln!(stdin, "READONLY")?;
                writeln!(stdin, "LRANGE {key} 0 -1")?;
                drop(stdin);
                c.wait_with_output()
            })
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again (it keeps its `nodes.conf`, so it rejoins: a
    /// replaced master as a replica) and wait until the cluster is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i].spawn(false);
        self.wait_healthy();
    }

    /// Move `key`'s slot to another master while clients use it: keys go
    /// over in batches with `MIGRATE` (clients meanwhile get ASK), then
    /// every master learns the new owner.
    pub fn migrate_slot_of(&self, key: &str) -> (usize, usize) {
        let slot = self.slot_of(key).to_string();
        let from = self.master_of(key).expect("slot has a master");
        let to = *self
            .masters()
            .iter()
            .find(|&&m| m != from)
            .expect("another master");
        let table = self.table();
        let id = |i: usize| {
            table
                .iter()
                .find(|e| e.port == self.nodes[i].port)
                .expect("node in table")
                .id
                .clone()
        };
        let (src, dst) = (self.nodes[from].port, self.nodes[to].port);
        let (src_id, dst_id) = (id(from), id(to));
        cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
        cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
        loop {
            let keys: Vec<String> = cli(src, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .lines()
                .map(str::to_owned)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = dst.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let out = cli(src, &args);
            assert!(
                out.contains("OK") || out.contains("NOKEY"),
                "MIGRATE: {out}"
            );
        }
        for i in self.masters() {
            cli(
                self.nodes[i].port,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id],
            );
        }
        (from, to)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
