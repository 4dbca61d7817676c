//! Real editing traces (tests/data): load, and turn each patch into an op.

use serde::Deserialize;
use tandem::ot::{splice, Operation};

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
    pub patches: Vec<(usize, usize, String)>,
}

pub fn load(name: &str) -> Trace {
    let path = format!("{}/tests/data/{name}.json.gz", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
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
