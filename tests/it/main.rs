//! The server's integration tests, one module per subject, linked into one
//! test binary (one link instead of one per file). Each module's `//!` says
//! what it covers; the README lists them. Two suites keep binaries of their
//! own because they load the machine and must not share it with these:
//! `tests/faults.rs` and `crates/tandem-bench/tests/bench_smoke.rs`.
//!
//! Shared helpers (processes, protocol and REST clients) are in
//! `crates/tandem-testkit`; this binary passes it the server cargo built.

mod abuse;
mod auth;
mod awareness;
mod checksum;
mod cluster;
mod commit;
mod deploy;
mod files;
mod fuzz_corpus;
mod hostile;
mod hostile_http;
mod hostile_members;
mod leader;
mod lease;
mod limits;
mod metadata;
mod ot_simulation;
mod otel;
mod postgres;
mod redis_cluster;
mod resume;
mod server;
mod sessions;
mod sharing;
mod tickets;
mod traces;
mod undo;
mod web_client;

/// The `tandem` binary under test, built by cargo for this test binary.
pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
