//! The pure core of Tandem: text operations and their algebra (`ot`),
//! document state and rebasing (`doc`), the content checksum (`checksum`),
//! the wire protocol (`protocol`), the client state machine (`client`),
//! commit batches and the sequencer's replies (`commit`), the commit
//! pipeline's rules (`pipeline`), undo stacks (`undo`) and typing runs
//! (`runs`), metadata CRDTs (`meta`), document languages (`language`),
//! awareness states and their bounds (`awareness`), abuse limits as data
//! (`limits`) and the fuzz entry points
//! (`fuzzing`). The server crate `tandem` re-exports every module under the
//! same name.
//!
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics, or
//! anything that does I/O (enforced: this crate has no such dependency).
//! Clocks, ids and randomness come in as arguments.

pub mod awareness;
pub mod batch;
pub mod checksum;
pub mod client;
pub mod commit;
pub mod doc;
#[doc(hidden)]
pub mod fuzzing;
pub mod language;
pub mod limits;
pub mod meta;
pub mod names;
pub mod ot;
pub mod pipeline;
pub mod protocol;
pub mod runs;
pub mod undo;
