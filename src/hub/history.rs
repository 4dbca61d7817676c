//! Reading the past: pages of committed records (from the document's
//! memory when it reaches back, else the journal completed from memory) and
//! a version's content, replayed from version 0 outside the document task.
//! An `impl DocTask` file (and `impl Hub`: the reads' front). Imports from
//! the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use std::sync::Arc;

use super::shared::Hub;
use super::state::{Cmd, HistoryPage};
use super::task::DocTask;
use super::types::HubError;
use crate::doc::Record;

/// Records replayed per page by [`Hub::content_at`]...
const REPLAY_PAGE: usize = 2000;
/// ...and their most op bytes: a replay holds the text (at most
/// `MAX_DOC_CHARS`) and one such page.
const REPLAY_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What a record counts against a page's byte budget: its op's size
/// ([`crate::ot::Operation::size_hint`], about its JSON), as the journal
/// query counts the op's stored JSON.
fn page_cost(r: &Record) -> usize {
    r.op.size_hint()
}

/// The first records of `it` within `limit` records and `max_bytes`;
/// `at_least_one`: the first whatever its size.
fn take_page<'a>(
    it: impl Iterator<Item = &'a Arc<Record>>,
    limit: usize,
    mut max_bytes: usize,
    at_least_one: bool,
) -> Vec<Arc<Record>> {
    let mut out = Vec::new();
    for r in it.take(limit) {
        let cost = page_cost(r);
        if cost > max_bytes && !(at_least_one && out.is_empty()) {
            break;
        }
        max_bytes = max_bytes.saturating_sub(cost);
        out.push(r.clone());
    }
    out
}

impl Hub {
    /// Up to `limit` committed records after version `since`, oldest first,
    /// within `max_bytes` of ops (at least one record), and the head version.
    pub async fn history(
        &self,
        doc: &str,
        since: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<HistoryPage, HubError> {
        self.ask(doc, |reply| Cmd::Records {
            since,
            limit,
            max_bytes,
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
            let (head, page) = self
                .history(doc, at, REPLAY_PAGE, REPLAY_PAGE_BYTES)
                .await?;
            if version > head {
                return Ok(None);
            }
            if page.first().is_none_or(|r| r.version != at + 1) {
                return Err(HubError::Diverged(format!("history has a gap after {at}")));
            }
            for r in page.iter().take_while(|r| r.version <= version) {
                r.op.apply_rope(&mut text)
                    .map_err(|e| HubError::Diverged(format!("replay at {}: {e}", r.version)))?;
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
        max_bytes: usize,
    ) -> Result<Vec<Arc<Record>>, HubError> {
        let head = self.state.version();
        if since >= head || limit == 0 {
            return Ok(Vec::new());
        }
        if let Some(it) = self.state.records_after(since) {
            return Ok(take_page(it, limit, max_bytes, true));
        }
        let journal = self
            .hub
            .store
            .journal_after(
                &self.id,
                since,
                limit.min(u32::MAX as usize) as u32,
                max_bytes,
            )
            .await?;
        let mut out: Vec<Arc<Record>> = journal.into_iter().map(Arc::new).collect();
        let last = out.last().map_or(since, |r| r.version);
        let used: usize = out.iter().map(|r| page_cost(r)).sum();
        // Completed from memory (the journal lags by up to one flush),
        // within what is left of the budget.
        if out.len() < limit {
            if let Some(it) = self.state.records_after(last) {
                let left = max_bytes.saturating_sub(used);
                out.extend(take_page(it, limit - out.len(), left, out.is_empty()));
            }
        }
        Ok(out)
    }
}
