//! rostersync: keeps contact-center agent groups in step across SaaS targets.
//!
//! See ARCHITECTURE.md for the map. In short: `source` reads the desired state, `store`
//! holds the known state, `plan` compares them (pure), `targets` send the calls, `sync`
//! runs it all once, `daemon` runs it forever, `app` maps commands to those.

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod intern;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod progress;
pub mod render;
pub mod source;
pub mod store;
pub mod sync;
pub mod targets;
