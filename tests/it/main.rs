//! The integration test binary: CLI, end-to-end runs against fake servers, conformance.

mod fakes;
mod harness;

#[macro_use]
mod conformance;

mod kazoo;
