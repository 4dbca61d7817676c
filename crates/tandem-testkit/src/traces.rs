//! Real editing traces (`tests/data`, the `editing-traces` format, gzipped):
//! load them, and turn each patch into an op.
//!
//! Must not import: Tandem's code beyond `tandem_core::ot`.

use std::path::Path;

use serde::Deserialize;
use tandem_core::ot::{splice, Operation};

#[derive(Deserialize)]
pub struct Trace {
    #[serde(rename = "startContent")]
    pub start: String,
    #[serde(rename = "endContent")]
    pub end: String,
    pub txns: Vec<Txn>,
}

#[derive(Deserialize)]
pub struct Txn {
    /// `(position, deleted, inserted)`, positions in code points.
    pub patches: Vec<(usize, usize, String)>,
}

/// The trace `tests/data/<name>.json.gz`.
pub fn load(name: &str) -> Trace {
    load_path(&crate::repo_root().join(format!("tests/data/{name}.json.gz")))
}

/// A trace file anywhere.
pub fn load_path(path: &Path) -> Trace {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_reader(flate2::read::GzDecoder::new(file)).expect("trace JSON")
}

/// Every patch as an op on the document it applies to (tracking length).
pub fn ops(trace: &Trace) -> Vec<Operation> {
    let mut len = trace.start.chars().count();
    let mut out = Vec::new();
    for t in &trace.txns {
        for (pos, del, ins) in &t.patches {
            out.push(splice(len, *pos, *del, ins));
            len = len - del + ins.chars().count();
        }
    }
    out
}
