//! Criterion benchmarks of the OT core (issue 8 W1/W2):
//! W1 — replay automerge-paper (259,778 edits) through the apply path into a
//! rope; W2 — transform/compose of small ops, and rebasing one op past k
//! concurrent ops (k = 1..64).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ropey::Rope;
use std::hint::black_box;
use tandem::ot::{splice, Operation};

fn trace_patches() -> (String, Vec<(usize, usize, String)>) {
    let t = tandem_testkit::traces::load("automerge-paper");
    (
        t.start,
        t.txns.into_iter().flat_map(|t| t.patches).collect(),
    )
}

fn w1_trace_replay(c: &mut Criterion) {
    let (start, patches) = trace_patches();
    let mut g = c.benchmark_group("W1");
    g.sample_size(10);
    // The whole apply path: build each op from its patch, validate length,
    // apply to the rope.
    g.bench_function("automerge-paper: build + apply 259,778 ops", |b| {
        b.iter(|| {
            let mut rope = Rope::from_str(&start);
            for (pos, del, ins) in &patches {
                let op = splice(rope.len_chars(), *pos, *del, ins);
                op.apply_rope(&mut rope).unwrap();
            }
            black_box(rope.len_chars())
        })
    });
    // The rope alone, same edits (the floor the apply path sits on).
    g.bench_function("automerge-paper: rope insert/remove only", |b| {
        b.iter(|| {
            let mut rope = Rope::from_str(&start);
            for (pos, del, ins) in &patches {
                if *del > 0 {
                    rope.remove(*pos..pos + del);
                }
                if !ins.is_empty() {
                    rope.insert(*pos, ins);
                }
            }
            black_box(rope.len_chars())
        })
    });
    g.finish();
}

fn w2_ot_micro(c: &mut Criterion) {
    let mut g = c.benchmark_group("W2");
    let a = splice(100, 10, 0, "hello");
    let b_op = splice(100, 50, 3, "x😀");
    g.bench_function("transform small ops", |b| {
        b.iter(|| black_box(&a).transform(black_box(&b_op)).unwrap())
    });
    let a2 = splice(105, 20, 0, "!");
    g.bench_function("compose small ops", |b| {
        b.iter(|| black_box(&a).compose(black_box(&a2)).unwrap())
    });
    for k in [1usize, 4, 16, 64] {
        // k concurrent single-character inserts, committed in order.
        let mut len = 1000;
        let concurrent: Vec<Operation> = (0..k)
            .map(|i| {
                let op = splice(len, (i * 37) % len, 0, "c");
                len += 1;
                op
            })
            .collect();
        let mine = splice(1000, 500, 2, "mine");
        g.bench_with_input(BenchmarkId::new("rebase past k ops", k), &k, |b, _| {
            b.iter(|| {
                let mut op = mine.clone();
                for c in &concurrent {
                    op = op.transform(c).unwrap().0;
                }
                black_box(op)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, w1_trace_replay, w2_ot_micro);
criterion_main!(benches);
