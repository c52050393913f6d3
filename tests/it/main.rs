//! The integration test binary: CLI, end-to-end runs against fake servers, conformance.

mod assign_group;
mod cli;
mod daemon;
mod fakes;
mod harness;
mod scale;
mod scim;
#[macro_use]
mod scope;

#[macro_use]
mod conformance;

mod kazoo;
mod teams;
mod unchanged;
