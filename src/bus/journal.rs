//! Group commit for the embedded journal: one writer task takes every
//! document's pending batch and writes them all in one transaction, so many
//! documents committing at once cost one disk transaction, not one each
//! (SQLite has one writer at a time).
//!
//! Owns: [`GroupJournal`], a [`Journal`] in front of the store's.
//! Must not import: axum, sqlx, the hub.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, Instrument};

use super::{BusError, Journal};
use crate::doc::Record;

/// Batches waiting for the writer before appends wait for room.
const QUEUE: usize = 1024;
/// Records written in one transaction at most (one batch always goes).
const MAX_RECORDS: usize = 8192;

struct Append {
    doc: String,
    records: Vec<Arc<Record>>,
    reply: oneshot::Sender<Result<(), BusError>>,
}

/// A [`Journal`] whose appends are gathered by one writer task and written
/// together. The task ends when the last handle is dropped.
pub struct GroupJournal {
    tx: mpsc::Sender<Append>,
}

impl GroupJournal {
    pub fn spawn(inner: Arc<dyn Journal>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(inner, rx).instrument(tracing::info_span!("journal_writer")));
        Arc::new(Self { tx })
    }
}

#[async_trait]
impl Journal for GroupJournal {
    async fn append(&self, doc: &str, records: &[Arc<Record>]) -> Result<(), BusError> {
        let (reply, answer) = oneshot::channel();
        let req = Append {
            doc: doc.to_owned(),
            records: records.to_vec(),
            reply,
        };
        let gone = || BusError::Unavailable("journal writer stopped".into());
        self.tx.send(req).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn writer(inner: Arc<dyn Journal>, mut rx: mpsc::Receiver<Append>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut records = group[0].records.len();
        while records < MAX_RECORDS {
            match rx.try_recv() {
                Ok(a) => {
                    records += a.records.len();
                    group.push(a);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("tandem_journal_group_batches").record(group.len() as f64);
        let all: Vec<(&str, &[Arc<Record>])> = group
            .iter()
            .map(|a| (a.doc.as_str(), a.records.as_slice()))
            .collect();
        if inner.append_many(&all).await.is_ok() {
            for a in group {
                let _ = a.reply.send(Ok(()));
            }
            continue;
        }
        // One document's batch may be the trouble (say, it was deleted):
        // the others must not fail with it.
        debug!(
            batches = group.len(),
            "group journal write failed; one by one"
        );
        for a in group {
            let r = inner.append(&a.doc, &a.records).await;
            let _ = a.reply.send(r);
        }
    }
}
