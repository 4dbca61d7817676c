//! Every input the fuzzers saved (`fuzz/corpus/<target>/`) and every crash
//! kept as a regression (`fuzz/regressions/<target>/`) runs through the same
//! entry points as the fuzz targets (`tandem::fuzzing`), on every
//! `cargo test`. The fuzzers themselves: see RELIABILITY.md.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let name = e.path().display().to_string();
            let ok = std::panic::catch_unwind(|| run(&data));
            assert!(ok.is_ok(), "{name} fails");
            n += 1;
        }
    }
    n
}

#[test]
fn client_frame_corpus() {
    assert!(replay("client_frame", tandem::fuzzing::client_frame) >= 10);
}

#[test]
fn op_algebra_corpus() {
    assert!(replay("op_algebra", tandem::fuzzing::op_algebra) >= 5);
}
