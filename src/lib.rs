//! perfpilot: a self-tuning performance optimizer agent.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
