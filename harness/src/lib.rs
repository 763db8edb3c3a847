//! scacheck: a conformance test harness for SIP servers that implement
//! Shared Call Appearance (SCA).
//!
//! The crate is split the way data flows through a run:
//! - [`model`]: the reference's T-Library events, the one event model;
//! - [`sip`]: codec adapter, typed SCA headers, builders, the records of
//!   what crossed the wire, socket edge;
//! - [`ua`]: the scripted user agents (a sans-IO core and its driver);
//! - [`reference`]: the embedded reference SCA server;
//! - [`observation`]: what a source delivers and what it can see;
//! - [`derive`](mod@derive): pure derivers, SIP records in, observations out;
//! - [`observe`]: event sources (a server's feed, logs, HEP mirror);
//! - [`pcap`] and [`hep`]: SIP traffic from capture files and from a
//!   server's live HEP mirror; [`check`]: a capture judged as a run;
//! - [`case`] and [`golden`]: the input files;
//! - [`diff`]: symbolic binding, alignment and unified diffs;
//! - [`run`]: one case end to end; [`report`]: what a run writes, a file
//!   per output.

pub mod actions;
pub mod bless;
pub mod case;
pub mod check;
pub mod credentials;
pub mod derive;
pub mod deviation;
pub mod diff;
pub mod discover;
pub mod flows;
pub mod golden;
pub mod hep;
pub mod input;
pub mod leak;
pub mod line;
pub mod model;
pub mod observation;
pub mod observe;
pub mod outcome;
pub mod pcap;
pub mod race;
pub mod reference;
pub mod replay;
pub mod report;
pub mod run;
pub mod sip;
pub mod suite;
pub mod target;
pub mod topology;
pub mod ua;
