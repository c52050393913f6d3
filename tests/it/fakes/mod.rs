//! Fake vendor servers, written from the vendors' documents in `../shared/seeds/`, behind
//! real HTTP on 127.0.0.1. The conformance suite talks to every one of them through `Fake`.

#![allow(dead_code)]

mod fake;
pub mod http;
mod keyed;

pub mod deepcall;
pub mod kazoo;
pub mod maestro;
pub mod scim2;
pub mod teams;

pub use fake::Fake;
pub use http::{Fault, Logged, Match, Reshape};
