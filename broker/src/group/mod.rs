//! Consumer groups: the coordinator's logic ([`coordinator`]) and the service that runs it
//! for requests ([`service`]).

pub mod coordinator;
pub mod service;
