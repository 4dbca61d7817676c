//! Seeded schedules of the simulated commit path. `TANDEM_SIM_SCHEDULES`
//! schedules (default: 2,000 racing with faults, 1,500 with leases and
//! faults, 500 of each without) from seed
//! `TANDEM_SIM_START` (default 0), so CI runs the same ones every time;
//! `TANDEM_SIM_SEED=n` replays one (`TANDEM_SIM_TRACE=1` prints its
//! events).

use tandem_sim::{run, Config};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn seeds(default: u64) -> std::ops::Range<u64> {
    if let Some(seed) = env("TANDEM_SIM_SEED") {
        return seed..seed + 1;
    }
    let start = env("TANDEM_SIM_START").unwrap_or(0);
    start..start + env("TANDEM_SIM_SCHEDULES").unwrap_or(default)
}

fn all(cfg: &Config, default: u64) -> tandem_sim::Report {
    let mut total = tandem_sim::Report::default();
    for seed in seeds(default) {
        let r = run(seed, cfg).unwrap_or_else(|e| {
            panic!("sim seed {seed} failed: {e} (replay: TANDEM_SIM_SEED={seed} cargo test -p tandem-sim)")
        });
        total.rounds += r.rounds;
        total.stale += r.stale;
        total.duplicates += r.duplicates;
        total.edits += r.edits;
        total.crashes += r.crashes;
        total.lost_replies += r.lost_replies;
        total.lost_publishes += r.lost_publishes;
        total.blinks += r.blinks;
        total.forwards += r.forwards;
        total.fenced += r.fenced;
        total.pauses += r.pauses;
        total.end_ms = total.end_ms.max(r.end_ms);
    }
    eprintln!("{cfg:?}: {total:?}");
    total
}

#[test]
fn faulty_schedules_converge_and_lose_nothing_acknowledged() {
    let r = all(&Config::default(), 2_000);
    assert!(
        r.crashes > 0 && r.lost_replies > 0,
        "faults were injected: {r:?}"
    );
}

/// The harness sees the race this design removes: instances holding one
/// hot document lose rounds to each other.
#[test]
fn a_split_hot_document_races() {
    let r = all(
        &Config {
            faults: false,
            ..Config::default()
        },
        500,
    );
    assert!(r.stale * 20 > r.rounds, "stale rounds were rare: {r:?}");
}

/// One committer per document: the same faults, plus instances frozen past
/// their lease; a frozen leader's late rounds are fenced.
#[test]
fn leased_schedules_converge_and_lose_nothing_acknowledged() {
    let r = all(
        &Config {
            leases: true,
            ..Config::default()
        },
        1_500,
    );
    assert!(
        r.forwards > 0 && r.pauses > 0,
        "leaders were followed and frozen: {r:?}"
    );
}

/// With a leader, the split hot document no longer races.
#[test]
fn with_leases_a_split_hot_document_does_not_race() {
    let r = all(
        &Config {
            leases: true,
            faults: false,
            ..Config::default()
        },
        500,
    );
    assert!(r.forwards > 0, "edits were forwarded: {r:?}");
    assert_eq!(r.stale, 0, "rounds were lost to a race: {r:?}");
}
