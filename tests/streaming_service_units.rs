//! The demo streaming service's own unit tests: range parsing, adaptive capacity and the
//! session leak.
//!
//! They are compiled here rather than with `[[example]] test = true`: with that key
//! `cargo test` builds the example only as a test harness, so the plain
//! `target/debug/examples/streaming_service` binary that the sidecar tests start would be
//! missing on a clean checkout.

// Each module is compiled alone here, without the service that uses all of its items.
#![allow(dead_code)]

#[path = "../examples/streaming_service/capacity.rs"]
mod capacity;
#[path = "../examples/streaming_service/leak.rs"]
mod leak;
#[path = "../examples/streaming_service/range.rs"]
mod range;
