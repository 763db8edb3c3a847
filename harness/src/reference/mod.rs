//! The embedded reference SCA server, so the suite runs on a fresh machine
//! with nothing else installed. [`server`] is its sans-IO core, [`run`] its
//! sockets and event feed, [`fault`] its seeded defects,
//! [`serve`] it on its own (`scacheck serve`).

pub mod fault;
pub mod run;
pub mod serve;
pub mod server;

pub use fault::Fault;
pub use run::Embedded;
pub use serve::Serve;

#[cfg(test)]
mod tests;
