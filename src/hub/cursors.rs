//! Carets: a socket's cursor update (checked, transformed to the head,
//! broadcast and published), other instances' cursors, and the carets a
//! joiner is shown.
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use super::task::DocTask;
use super::types::{error_msg, text};
use crate::bus::BusEvent;
use crate::protocol::{CursorInfo, ErrorCode, ServerMessage};

impl DocTask {
    pub(super) fn cursor(
        &mut self,
        conn: u64,
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    ) {
        let Some(c) = self.room.conn(conn) else {
            return;
        };
        let (client, user) = (c.client.clone(), c.user.id.clone());
        if version > self.state.version() {
            let m = "cursor version is ahead of the document";
            self.send_to(conn, error_msg(ErrorCode::VersionOutOfRange, m, None));
            return;
        }
        if anchor.is_some() != head.is_some() {
            let m = "anchor and head must both be set or both be null";
            self.send_to(conn, error_msg(ErrorCode::BadMessage, m, None));
            return;
        }
        // Too old to transform: drop it; the next one will do.
        let Some(len) = self.state.len_at(version) else {
            return;
        };
        if anchor.max(head).is_some_and(|i| i > len as u64) {
            let m = format!("cursor is beyond the document end ({len})");
            self.send_to(conn, error_msg(ErrorCode::BadMessage, &m, None));
            return;
        }
        let t = |i: Option<u64>| {
            i.and_then(|i| {
                self.state
                    .transform_index(version, i as usize)
                    .map(|x| x as u64)
            })
        };
        let cursor = CursorInfo {
            client: client.clone(),
            user,
            version: self.state.version(),
            anchor: t(anchor),
            head: t(head),
        };
        let msg = text(ServerMessage::Cursor(&cursor));
        self.broadcast(Some(conn), msg);
        self.outbox.publish(BusEvent::Cursor {
            instance: self.hub.settings.instance_id.clone(),
            cursor: cursor.clone(),
        });
        self.keep_cursor(cursor);
    }

    /// A caret from another instance.
    pub(super) fn remote_cursor(&mut self, cursor: &CursorInfo) {
        self.broadcast(None, text(ServerMessage::Cursor(cursor)));
        self.keep_cursor(cursor.clone());
    }

    /// Remember a caret for later joiners; a null one is a removal.
    fn keep_cursor(&mut self, cursor: CursorInfo) {
        if cursor.anchor.is_none() {
            self.room.cursors.remove(&cursor.client);
        } else {
            self.room.cursors.insert(cursor.client.clone(), cursor);
        }
    }

    /// The kept carets, transformed to the head (those too old are left out).
    pub(super) fn current_cursors(&self) -> Vec<CursorInfo> {
        let head = self.state.version();
        self.room
            .cursors
            .values()
            .filter_map(|c| {
                let t = |i: Option<u64>| -> Option<Option<u64>> {
                    match i {
                        None => Some(None),
                        Some(i) => Some(Some(
                            self.state.transform_index(c.version, i as usize)? as u64
                        )),
                    }
                };
                Some(CursorInfo {
                    client: c.client.clone(),
                    user: c.user.clone(),
                    version: head,
                    anchor: t(c.anchor)?,
                    head: t(c.head)?,
                })
            })
            .collect()
    }
}
