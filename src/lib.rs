//! perfpilot: a self-tuning performance optimizer agent.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod budget;
pub mod cli;
pub mod engine;
pub mod events;
pub mod history;
pub mod layer;
pub mod learned;
pub mod trigger;

pub use agent::{Agent, AgentBuilder};
/// The trend fit, kept at its old path for benches and embedders: see [`trigger::trend`].
pub use trigger::trend;
pub mod config;
pub mod connections;
pub mod probe;
pub mod prometheus;
pub mod recorder;
pub mod reload;
pub mod replay;
pub mod sample;
mod sys;
pub mod target;
pub mod wire_time;
pub mod worker;

#[cfg(test)]
mod test_support;
