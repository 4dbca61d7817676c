//! Reading the past: pages of committed records (from the document's
//! memory when it reaches back, else the journal completed from memory) and
//! a version's content, replayed from version 0 outside the document task.
//! Must not import: axum, sqlx, redis.

use std::sync::Arc;

use super::task::{Cmd, DocTask};
use super::{Hub, HubError};
use crate::bus::BusError;
use crate::doc::Record;

/// The head version and a page of committed records.
pub type HistoryPage = (u64, Vec<Arc<Record>>);

/// Records replayed per page by [`Hub::content_at`].
const REPLAY_PAGE: usize = 2000;

impl Hub {
    /// Up to `limit` committed records after version `since`, oldest first,
    /// and the head version.
    pub async fn history(
        &self,
        doc: &str,
        since: u64,
        limit: usize,
    ) -> Result<HistoryPage, HubError> {
        self.ask(doc, |reply| Cmd::Records {
            since,
            limit,
            reply,
        })
        .await
    }

    /// The document's content at `version` (replayed from version 0 outside
    /// the document task, a page of records at a time); `None` past the head.
    pub async fn content_at(&self, doc: &str, version: u64) -> Result<Option<String>, HubError> {
        let mut text = ropey::Rope::new();
        let mut at = 0;
        while at < version {
            let (head, page) = self.history(doc, at, REPLAY_PAGE).await?;
            if version > head {
                return Ok(None);
            }
            if page.first().is_none_or(|r| r.version != at + 1) {
                return Err(HubError::Bus(BusError::Corrupt(format!(
                    "history has a gap after {at}"
                ))));
            }
            for r in page.iter().take_while(|r| r.version <= version) {
                r.op.apply_rope(&mut text).map_err(|e| {
                    HubError::Bus(BusError::Corrupt(format!("replay at {}: {e}", r.version)))
                })?;
                at = r.version;
            }
        }
        Ok(Some(text.to_string()))
    }
}

impl DocTask {
    /// Records after `since`: from memory when it reaches back that far,
    /// else from the journal, completed from memory (the journal lags by up
    /// to one flush).
    pub(super) async fn records(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Record>>, HubError> {
        let head = self.state.version();
        if since >= head || limit == 0 {
            return Ok(Vec::new());
        }
        if let Some(it) = self.state.records_after(since) {
            return Ok(it.take(limit).cloned().collect());
        }
        let journal = self
            .hub
            .store
            .journal_after(&self.id, since, limit.min(u32::MAX as usize) as u32)
            .await?;
        let mut out: Vec<Arc<Record>> = journal.into_iter().map(Arc::new).collect();
        let last = out.last().map_or(since, |r| r.version);
        if out.len() < limit {
            if let Some(it) = self.state.records_after(last) {
                out.extend(it.take(limit - out.len()).cloned());
            }
        }
        Ok(out)
    }
}
