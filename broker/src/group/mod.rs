//! Consumer groups: the coordinator's logic ([`coordinator`]).

pub mod coordinator;
