//! The integration test binary: CLI, end-to-end runs against fake servers, conformance.

mod daemon;
mod fakes;
