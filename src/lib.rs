//! perfpilot: a self-tuning performance optimizer agent.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod trigger;
pub mod events;
pub mod history;
pub mod engine;
pub mod api;
