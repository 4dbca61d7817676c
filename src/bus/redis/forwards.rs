//! Forwarded edits and verdicts as they travel on a document's channel
//! (the `fwd` and `verdicts` kinds of its events): ops as their JSON,
//! verdicts as one small object each.
//! Must not import: axum, sqlx, the hub.

use serde::{Deserialize, Serialize};

use crate::bus::BusError;
use crate::ot::Operation;
use crate::pipeline::{Forwarded, Refusal, Verdict};
use crate::protocol::{ErrorCode, Role};
use crate::undo::Stack;

/// The most components an op on the channel may have (as a socket's).
const MAX_COMPONENTS: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
pub(super) struct ForwardedWire {
    client: String,
    user: String,
    role: Role,
    seq: u64,
    base: u64,
    op: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<Stack>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum VerdictWire {
    Committed(u64),
    Dup(u64),
    Unchanged(u64),
    Refused { code: ErrorCode, message: String },
}

#[derive(Serialize, Deserialize)]
pub(super) struct VerdictItem {
    client: String,
    seq: u64,
    verdict: VerdictWire,
}

pub(super) fn edits_to_wire(edits: &[Forwarded]) -> Vec<ForwardedWire> {
    edits
        .iter()
        .map(|f| ForwardedWire {
            client: f.client.clone(),
            user: f.user.clone(),
            role: f.role,
            seq: f.seq,
            base: f.base,
            op: f.op.to_json(),
            step: f.step,
        })
        .collect()
}

pub(super) fn edits_from_wire(wire: Vec<ForwardedWire>) -> Result<Vec<Forwarded>, BusError> {
    wire.into_iter()
        .map(|w| {
            let op = Operation::from_json(&w.op, MAX_COMPONENTS)
                .map_err(|e| BusError::Corrupt(format!("forwarded op: {e}")))?;
            Ok(Forwarded {
                client: w.client,
                user: w.user,
                role: w.role,
                seq: w.seq,
                base: w.base,
                op,
                step: w.step,
            })
        })
        .collect()
}

pub(super) fn verdicts_to_wire(items: &[(String, u64, Verdict)]) -> Vec<VerdictItem> {
    items
        .iter()
        .map(|(client, seq, v)| VerdictItem {
            client: client.clone(),
            seq: *seq,
            verdict: match v {
                Verdict::Committed(v) => VerdictWire::Committed(*v),
                Verdict::Duplicate { version, .. } => VerdictWire::Dup(*version),
                Verdict::Unchanged(v) => VerdictWire::Unchanged(*v),
                Verdict::Refused(r) => VerdictWire::Refused {
                    code: r.code,
                    message: r.message.clone(),
                },
            },
        })
        .collect()
}

pub(super) fn verdicts_from_wire(items: Vec<VerdictItem>) -> Vec<(String, u64, Verdict)> {
    items
        .into_iter()
        .map(|i| {
            let verdict = match i.verdict {
                VerdictWire::Committed(v) => Verdict::Committed(v),
                VerdictWire::Dup(version) => Verdict::Duplicate {
                    client: i.client.clone(),
                    seq: i.seq,
                    version,
                },
                VerdictWire::Unchanged(v) => Verdict::Unchanged(v),
                VerdictWire::Refused { code, message } => {
                    Verdict::Refused(Refusal::new(code, &message))
                }
            };
            (i.client, i.seq, verdict)
        })
        .collect()
}
