//! Scripted SIP user agents: [`agent`] is the sans-IO core, [`driver`] runs
//! it on a socket and lets a script act on it and wait for it; [`reading`]
//! holds the rules by which a phone objects to what it is sent, which a
//! capture's phones are read by too.

pub mod agent;
pub mod driver;
pub mod reading;

pub use agent::{
    Agent, AgentConfig, CallDirection, CallView, End, LostAck, Phase, ScriptError, Seizure, Status,
    Tally,
};
pub use driver::{AgentHandle, UaError};

#[cfg(test)]
mod tests;
