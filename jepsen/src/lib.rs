//! redisraft-jepsen: a Jepsen-style safety suite for redisraft.
//!
//! `history` holds operations in Jepsen's EDN form; `checker` proves a
//! history safe (or names its anomalies).

pub mod checker;
pub mod client;
pub mod cluster;
pub mod env;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod report;
pub mod run;
pub mod workload;
