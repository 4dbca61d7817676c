//! History as sessions: committed versions grouped, newest first, into
//! editing sessions (a session breaks after [`GAP_MS`] without an edit,
//! past [`MAX_SESSION_MS`] or [`MAX_SESSION_VERSIONS`]), each with its
//! versions, times, authors and characters inserted/deleted; paged back to
//! version 1 with an opaque cursor. Also the per-version `before=` page.
//! Must not import: sqlx, redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ErrorBody;
use crate::doc::Record;
use crate::ot::Component;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, Auth};
use crate::web::AppState;

/// No edit for this long ends a session.
pub const GAP_MS: i64 = 5 * 60 * 1000;
/// A session spans at most this long...
pub const MAX_SESSION_MS: i64 = 30 * 60 * 1000;
/// ...and this many versions.
pub const MAX_SESSION_VERSIONS: u64 = 1000;
/// Versions read per page (twice the longest session: a full window always
/// holds one whole session).
const SCAN: u64 = 2 * MAX_SESSION_VERSIONS;
/// Authors listed per session at most (`more_authors` counts the rest).
const MAX_AUTHORS: usize = 20;

#[derive(Deserialize, IntoParams)]
pub struct SessionsQuery {
    /// The `next` of the previous page (absent: start from the newest).
    before: Option<String>,
    /// Sessions per page, at most 50 (default 20).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct Author {
    id: String,
    name: String,
}

/// One editing session.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct Session {
    /// Its first and last versions.
    first: u64,
    last: u64,
    /// Commit times of its first and last versions (ms since the Unix epoch).
    start: i64,
    end: i64,
    /// Who edited, most versions first (at most 20).
    authors: Vec<Author>,
    /// Authors beyond those listed.
    more_authors: usize,
    /// Characters (code points) inserted and deleted.
    inserted: u64,
    deleted: u64,
}

/// A page of sessions, newest first.
#[derive(Serialize, ToSchema)]
pub struct SessionsPage {
    sessions: Vec<Session>,
    /// Pass as `before` for the next (older) page; absent after version 1.
    next: Option<String>,
}

/// What a session needs of a record.
#[derive(Clone, Debug)]
pub struct Stat {
    version: u64,
    time: i64,
    user: String,
    inserted: u64,
    deleted: u64,
}

fn stat(r: &Record) -> Stat {
    let (mut inserted, mut deleted) = (0u64, 0u64);
    for c in r.op.components() {
        match c {
            Component::Insert(s) => inserted += s.chars().count() as u64,
            Component::Delete(n) => deleted += *n as u64,
            Component::Retain(_) => {}
        }
    }
    Stat {
        version: r.version,
        time: r.time,
        user: r.user.clone(),
        inserted,
        deleted,
    }
}

/// A session being built, newest version first: authors by version count.
struct Building {
    s: Session,
    counts: HashMap<String, u64>,
}

/// Group `stats` (oldest first) into sessions, newest first; `None` names
/// are filled in later.
pub fn group(stats: &[Stat]) -> Vec<(Session, Vec<(String, u64)>)> {
    let mut out: Vec<Building> = Vec::new();
    for st in stats.iter().rev() {
        let joins = out.last().is_some_and(|b| {
            b.s.start - st.time <= GAP_MS
                && b.s.end - st.time <= MAX_SESSION_MS
                && b.s.last - st.version < MAX_SESSION_VERSIONS
        });
        if !joins {
            out.push(Building {
                s: Session {
                    first: st.version,
                    last: st.version,
                    start: st.time,
                    end: st.time,
                    authors: Vec::new(),
                    more_authors: 0,
                    inserted: 0,
                    deleted: 0,
                },
                counts: HashMap::new(),
            });
        }
        let Some(b) = out.last_mut() else { continue };
        b.s.first = st.version;
        b.s.start = st.time;
        b.s.inserted += st.inserted;
        b.s.deleted += st.deleted;
        *b.counts.entry(st.user.clone()).or_default() += 1;
    }
    out.into_iter()
        .map(|b| {
            let mut counts: Vec<(String, u64)> = b.counts.into_iter().collect();
            counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            (b.s, counts)
        })
        .collect()
}

/// Read the records in `(start, end]` a page at a time, handing each to `f`.
async fn scan(
    state: &AppState,
    id: &str,
    start: u64,
    end: u64,
    mut f: impl FnMut(&Arc<Record>),
) -> Result<(), ApiError> {
    let mut since = start;
    while since < end {
        let limit = usize::try_from(end - since).unwrap_or(1000).min(1000);
        let (_, page) = state
            .hub
            .history(id, since, limit, state.config.history_page_bytes)
            .await?;
        let Some(last) = page.last() else { break };
        since = last.version;
        for r in page.iter().filter(|r| r.version <= end) {
            f(r);
        }
    }
    Ok(())
}

fn parse_cursor(c: Option<&str>) -> Result<Option<u64>, ApiError> {
    c.map(|c| {
        c.strip_prefix('v')
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::BadRequest("bad cursor".into()))
    })
    .transpose()
}

/// The document's history as editing sessions, newest first, a page at a
/// time: follow `next` to page back to version 1.
#[utoipa::path(get, path = "/api/documents/{id}/history/sessions", params(SessionsQuery), security(("bearer" = [])),
    responses(
    (status = 200, body = SessionsPage, description = "A page of sessions, newest first"),
    (status = 400, body = ErrorBody, description = "Bad cursor or document id"),
    (status = 401, body = ErrorBody, description = "Not signed in"),
    (status = 403, body = ErrorBody, description = "No access to the document"),
    (status = 404, body = ErrorBody, description = "No such document")))]
pub async fn get_sessions(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<SessionsQuery>,
) -> Result<Json<SessionsPage>, ApiError> {
    role_for(&state, &id, &who).await?;
    let limit = q.limit.unwrap_or(20).clamp(1, 50);
    let (head, _) = state.hub.history(&id, u64::MAX, 1, 1).await?;
    let end = match parse_cursor(q.before.as_deref())? {
        Some(before) => (before - 1).min(head),
        None => head,
    };
    let start = end.saturating_sub(SCAN);
    let mut stats = Vec::new();
    scan(&state, &id, start, end, |r| stats.push(stat(r))).await?;
    let mut groups = group(&stats);
    // The oldest session may go on before the window: the next page has it.
    if start > 0 && groups.len() > 1 {
        groups.pop();
    }
    groups.truncate(limit);
    let next = groups
        .last()
        .map(|(s, _)| s.first)
        .filter(|f| *f > 1)
        .map(|f| format!("v{f}"));
    let mut names: HashMap<String, String> = HashMap::new();
    let mut sessions = Vec::with_capacity(groups.len());
    for (mut s, counts) in groups {
        s.more_authors = counts.len().saturating_sub(MAX_AUTHORS);
        for (user, _) in counts.into_iter().take(MAX_AUTHORS) {
            let name = match names.get(&user) {
                Some(n) => n.clone(),
                None => {
                    let n = state.store.user_name(&user).await?.unwrap_or(user.clone());
                    names.insert(user.clone(), n.clone());
                    n
                }
            };
            s.authors.push(Author { id: user, name });
        }
        sessions.push(s);
    }
    Ok(Json(SessionsPage { sessions, next }))
}

/// The newest records before `before` (oldest first), at most `limit` and
/// `max_bytes` of ops (at least one).
pub async fn records_before(
    state: &AppState,
    id: &str,
    before: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<Arc<Record>>, ApiError> {
    let end = before.saturating_sub(1);
    let start = end.saturating_sub(limit as u64);
    let mut kept: VecDeque<Arc<Record>> = VecDeque::new();
    let mut bytes = 0usize;
    scan(state, id, start, end, |r| {
        bytes += r.op.size_hint();
        kept.push_back(r.clone());
        while kept.len() > 1 && bytes > max_bytes {
            if let Some(old) = kept.pop_front() {
                bytes -= old.op.size_hint();
            }
        }
    })
    .await?;
    Ok(kept.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(version: u64, time: i64, user: &str, ins: u64) -> Stat {
        Stat {
            version,
            time,
            user: user.into(),
            inserted: ins,
            deleted: 0,
        }
    }

    #[test]
    fn versions_group_by_pauses_span_and_count() {
        let m = 60_000;
        let mut stats = vec![
            st(1, 0, "a", 1),
            st(2, m, "b", 2),
            st(3, 2 * m, "a", 3),
            // 10 minutes later: a new session.
            st(4, 12 * m, "b", 4),
        ];
        let g = group(&stats);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].0.first, g[0].0.last, g[0].0.inserted), (4, 4, 4));
        assert_eq!((g[1].0.first, g[1].0.last, g[1].0.inserted), (1, 3, 6));
        assert_eq!(g[1].1[0], ("a".to_string(), 2));
        // A long stretch without pauses is cut at 30 minutes.
        stats = (1..=40).map(|v| st(v, v as i64 * m, "a", 1)).collect();
        let g = group(&stats);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].0.first, g[0].0.last), (10, 40));
        // ...and at 1000 versions.
        stats = (1..=1500).map(|v| st(v, v as i64, "a", 1)).collect();
        let g = group(&stats);
        assert_eq!((g[0].0.first, g[0].0.last), (501, 1500));
        assert_eq!(parse_cursor(Some("v7")).unwrap(), Some(7));
        assert!(parse_cursor(Some("7")).is_err() && parse_cursor(Some("v0")).is_err());
    }
}
