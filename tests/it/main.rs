//! The integration test binary: CLI, end-to-end runs against fake servers, conformance.

mod assign_group;
mod cli;
mod daemon;
mod disagree;
mod failover;
mod fakes;
mod harness;
mod hostile;
mod scale;
mod scim;
#[macro_use]
mod scope;
mod secrets;
mod slapd;
mod soak;

#[macro_use]
mod conformance;

mod command;
mod kazoo;
mod ldap;
mod online;
#[path = "../../src/store/pg_cluster.rs"]
mod pg_cluster;
mod pg_harness;
mod postgres;
mod teams;
mod tls;
mod unchanged;
