//! The Redis [`UndoStacks`] (`undo.lua` on the document's `stacks` hash)
//! and [`MetaStore`] (the document's `meta` hash, a field per instance).
//! Must not import: axum, sqlx, the hub.

use async_trait::async_trait;

use super::{unavailable, RedisBackend};
use crate::bus::{BusError, MetaStore, UndoStacks};
use crate::undo::{Stack, StackPush, UndoEntry, STACK_BYTES, STACK_LIMIT};

/// A push as `stack_push`'s arguments (`stack.lua`): the user's stack
/// field, the entry, the version whose top it replaces ('' = none), the
/// field to clear ('' = none), and the entry pushed instead when the top is
/// not at that version ('' = the entry).
pub(super) fn push_fields(user: &str, push: &StackPush) -> [String; 5] {
    let clear = if push.clear_redo {
        format!("{}{user}", Stack::Redo.prefix())
    } else {
        String::new()
    };
    [
        format!("{}{user}", push.stack.prefix()),
        push.entry.to_json(),
        push.replace_top_at
            .map(|v| v.to_string())
            .unwrap_or_default(),
        clear,
        push.fallback
            .as_ref()
            .map(UndoEntry::to_json)
            .unwrap_or_default(),
    ]
}

impl RedisBackend {
    async fn stack_read(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
        action: &str,
    ) -> Result<Option<UndoEntry>, BusError> {
        let raw: Option<String> = self
            .scripts
            .undo
            .key(self.key(doc, "stacks"))
            .arg(action)
            .arg(format!("{}{user}", stack.prefix()))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match raw {
            None => Ok(None),
            Some(s) => UndoEntry::from_json(&s)
                .map(Some)
                .ok_or_else(|| BusError::Corrupt("undo entry".into())),
        }
    }

    async fn meta_cmd<T: redis::FromRedisValue>(
        &self,
        cmd: &mut redis::Cmd,
    ) -> Result<T, BusError> {
        cmd.query_async(&mut self.conn()).await.map_err(unavailable)
    }
}

#[async_trait]
impl UndoStacks for RedisBackend {
    async fn push(&self, doc: &str, user: &str, push: &StackPush) -> Result<(), BusError> {
        let [field, entry, at, clear, fallback] = push_fields(user, push);
        let _: i64 = self
            .scripts
            .undo
            .key(self.key(doc, "stacks"))
            .arg("push")
            .arg(field)
            .arg(entry)
            .arg(at)
            .arg(STACK_LIMIT)
            .arg(clear)
            .arg(STACK_BYTES)
            .arg(fallback)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn pop(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
    ) -> Result<Option<UndoEntry>, BusError> {
        self.stack_read(doc, user, stack, "pop").await
    }
}

#[async_trait]
impl MetaStore for RedisBackend {
    async fn put(&self, doc: &str, instance: &str, state: &str) -> Result<(), BusError> {
        let key = self.key(doc, "meta");
        self.meta_cmd::<i64>(redis::cmd("HSET").arg(key).arg(instance).arg(state))
            .await?;
        Ok(())
    }

    async fn all(&self, doc: &str) -> Result<Vec<String>, BusError> {
        self.meta_cmd(redis::cmd("HVALS").arg(self.key(doc, "meta")))
            .await
    }
}
