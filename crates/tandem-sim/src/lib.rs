//! Deterministic simulation of the commit path. Several instances, each
//! running the core's [`Pipeline`] over its own [`DocState`] exactly as the
//! document task does, share a model sequencer ([`model::SeqModel`]) and a
//! bus; clients ([`OtClient`]) type on them. Everything runs on one virtual
//! clock from one seed: message delays, lost replies, crashed instances
//! and reconnecting clients are drawn from it, so a failing schedule
//! replays exactly from its seed.
//!
//! Checked at the end of every schedule: no `(client, seq)` is committed
//! twice, every acknowledged edit is in the log once, every client and
//! instance holds the log's text, and nothing is left unacknowledged.
//!
//! Files: `world.rs` (the clock, faults, clients, the sequencer calls,
//! the end-of-schedule checks), `instance.rs` (an instance executing the
//! pipeline), `events.rs` (events and messages), `model.rs` (the sequencer).
//!
//! Must not import: anything that does I/O (a pure crate, like the core).

mod events;
mod instance;
mod leader;
pub mod model;
mod world;

pub use world::{run, Config, Report};
