//! Document metadata in the task: the merged CRDT state ([`MetaState`],
//! plain data in `state.rs`), loading it (the store's rows and the shared
//! metadata store, merged), local changes (announced to sockets and
//! instances, stored on the tick) and merging other instances' states.
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use tracing::warn;

use super::outbox::BusWrite;
use super::shared::Inner;
use super::state::{MetaChange, MetaResult, MetaState};
use super::task::DocTask;
use super::types::{text, HubError, Refusal};
use crate::bus::BusEvent;
use crate::meta::{DocMeta, MetaView};
use crate::protocol::{ErrorCode, ServerMessage};

impl MetaState {
    /// The merge of every state kept for the document: the stored title,
    /// each instance's row in the store, each instance's state in the
    /// metadata store.
    pub(super) async fn load(hub: &Inner, doc: &str) -> Result<Self, HubError> {
        let title = hub
            .store
            .document_row(doc)
            .await?
            .map(|m| m.title)
            .unwrap_or_default();
        let mut meta = DocMeta::with_title(&title);
        let mut states = hub.store.meta_states(doc).await?;
        states.extend(hub.meta_store.all(doc).await?);
        for s in states {
            match DocMeta::from_json(&s) {
                Some(m) => meta.merge(&m),
                None => warn!("unreadable metadata state ignored"),
            }
        }
        Ok(Self {
            merged: meta,
            dirty: false,
        })
    }
}

impl DocTask {
    pub(super) async fn change_meta(&mut self, change: MetaChange) -> MetaResult {
        let me = self.hub.settings.instance_id.clone();
        let now = (self.hub.clock)();
        let max_tags = self.hub.settings.max_tags_per_doc;
        let meta = &mut self.meta.merged;
        match change {
            MetaChange::Title(t) => meta.title.set(&t, now, &me),
            MetaChange::Language(l) => meta.language.set(&l, now, &me),
            MetaChange::AddTag(t) => {
                if !meta.tags.contains(&t) && meta.tags.elements().len() >= max_tags {
                    return Ok(Err(Refusal {
                        code: ErrorCode::BadMessage,
                        message: format!("a document has at most {max_tags} tags"),
                    }));
                }
                meta.tags.add(&t, &me)
            }
            MetaChange::RemoveTag(t) => meta.tags.remove(&t),
        }
        self.meta_announce();
        self.store_meta().await?;
        Ok(Ok(self.meta_view()))
    }

    /// What clients see of the metadata (at most `MAX_TAGS_PER_DOC` tags).
    pub(super) fn meta_view(&self) -> MetaView {
        self.meta
            .merged
            .view_bounded(self.hub.settings.max_tags_per_doc)
    }

    /// A view: a fresh open (a resume is the same visit). Stored on the
    /// next tick, so a burst of joins costs one store write, not one each.
    pub(super) fn count_view(&mut self) {
        let me = &self.hub.settings.instance_id;
        self.meta.merged.views.increment(me, 1);
        self.meta_announce();
    }

    /// After a local change: tell our clients and the other instances, and
    /// keep our state in the metadata store; the store write is left to
    /// [`DocTask::store_meta`].
    fn meta_announce(&mut self) {
        let view = self.meta_view();
        self.broadcast(None, text(ServerMessage::Meta(&view)));
        let me = self.hub.settings.instance_id.clone();
        self.outbox.publish(BusEvent::Meta {
            instance: me,
            state: Box::new(self.meta.merged.clone()),
        });
        self.outbox
            .write(BusWrite::MetaPut(self.meta.merged.to_json()));
        self.meta.dirty = true;
    }

    /// Another instance's state: merge it, and tell our clients if the
    /// view changed.
    pub(super) fn merge_meta(&mut self, state: &DocMeta) {
        let before = self.meta_view();
        self.meta.merged.merge(state);
        let after = self.meta_view();
        if after != before {
            self.broadcast(None, text(ServerMessage::Meta(&after)));
        }
    }

    /// Store this instance's metadata state if it changed since last stored.
    pub(super) async fn store_meta(&mut self) -> Result<(), HubError> {
        if !self.meta.dirty {
            return Ok(());
        }
        let me = &self.hub.settings.instance_id;
        let merged = &self.meta.merged;
        self.hub
            .store
            .put_meta(
                &self.id,
                me,
                &merged.to_json(),
                &merged.title.value,
                &merged.language.value,
            )
            .await?;
        self.meta.dirty = false;
        Ok(())
    }
}
