//! Real editing traces replayed through the OT engine: applying every patch
//! as an op gives exactly `endContent`; composing them gives the same; and
//! a document state (rope + history) accepts them as committed records.

use std::sync::Arc;

use ropey::Rope;
use tandem::doc::{DocState, Record};
use tandem_testkit::traces::{load, ops};

#[test]
fn sequential_traces_replay_to_their_end_content() {
    for name in ["automerge-paper", "sveltecomponent"] {
        let trace = load(name);
        let ops = ops(&trace);
        assert!(ops.len() > 1000, "{name}: {} ops", ops.len());
        let mut rope = Rope::from_str(&trace.start);
        for op in &ops {
            op.apply_rope(&mut rope).unwrap();
        }
        assert_eq!(rope.to_string(), trace.end, "{name}");

        // Through the document state, as committed records with history.
        let mut doc = DocState::new(&trace.start, 0, tandem::doc::Retain::count(1000));
        for (i, op) in ops.iter().enumerate() {
            let rec = Record {
                version: i as u64 + 1,
                op: op.clone(),
                user: "u".into(),
                client: "c".into(),
                seq: i as u64 + 1,
                time: 0,
                trace: None,
            };
            doc.apply(Arc::new(rec)).unwrap();
        }
        assert_eq!(doc.content(), trace.end, "{name}");
        assert_eq!(doc.version(), ops.len() as u64);

        // Composition agrees with sequential application (in chunks, as a
        // client's buffer would compose them).
        let mut text = trace.start.clone();
        for chunk in ops.chunks(97) {
            let composed = chunk[1..]
                .iter()
                .fold(chunk[0].clone(), |a, b| a.compose(b).unwrap());
            text = composed.apply(&text).unwrap();
        }
        assert_eq!(text, trace.end, "{name} (composed)");
    }
}
