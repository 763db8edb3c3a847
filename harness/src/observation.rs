//! What a source delivers and what it can see: an [`Observation`] is one
//! event of the model as a source gave it, [`Observability`] the channels,
//! attributes and events that source can show, so that the diff compares
//! only those. Pure data, shared by the derivers ([`crate::derive`]), the
//! event sources ([`crate::observe`]) and what judges and reports them.

use crate::model::{Attr, Channel, Event, EventName, KnownEvent};

/// One event as a source delivered it.
#[derive(Debug, Clone)]
pub struct Observation {
    pub channel: Channel,
    pub event: Event,
    /// The source's own text of the event (a feed line, a log block).
    pub raw: String,
    /// The sequence in which this event's place is meaningful. A feed or a
    /// log orders all of a channel's events (`None`). An event derived from
    /// SIP is ordered only among events of its SIP dialog: SIP orders
    /// nothing across dialogs, and a server handles two dialogs' messages
    /// in either order (Kamailio's workers take a phone's 200 on one dialog
    /// and its BYE on another at once). The diff compares order within a
    /// sequence only.
    pub within: Option<String>,
    /// The seq of the phone's record it was derived from (its SIP
    /// message), when a SIP deriver found it in one of the case's records;
    /// None from a feed, a log or the server's mirror. The HTML report
    /// marks that message as the one holding a divergence.
    pub record: Option<u64>,
}

/// What a source can see. The diff compares only this; the report lists
/// the rest as not observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    /// Where the T-Library channels' events (each DN, call monitoring)
    /// come from.
    pub source: String,
    /// Where the SCA wire channels' (`sca.<DN>`) events come from.
    pub wire_source: String,
    /// `None`: every channel.
    pub channels: Option<Vec<Channel>>,
    /// Attributes the source cannot see.
    pub blind_to: Vec<Attr>,
    /// Events the source cannot see at all (SIP shows no EventPrivateInfo).
    pub blind_events: Vec<KnownEvent>,
}

impl Observability {
    /// A source that sees every channel and attribute (a server's own feed).
    pub fn everything(source: &str) -> Observability {
        Observability {
            source: source.to_string(),
            wire_source: source.to_string(),
            channels: None,
            blind_to: Vec::new(),
            blind_events: Vec::new(),
        }
    }

    /// The same, with the wire layer from another source (a server's feed
    /// has T-Library events; its SCA wire layer comes from the SIP).
    pub fn with_wire_source(mut self, source: &str) -> Observability {
        self.wire_source = source.to_string();
        self
    }

    /// Where a channel's events come from.
    pub fn source_of(&self, channel: &Channel) -> &str {
        match channel {
            Channel::Wire(_) => &self.wire_source,
            _ => &self.source,
        }
    }

    /// The channels grouped by the source their events come from, in
    /// order of first appearance: what a report says of its sources.
    pub fn sources<'a>(
        &'a self,
        channels: impl IntoIterator<Item = &'a Channel>,
    ) -> Vec<(&'a str, Vec<&'a Channel>)> {
        let mut out: Vec<(&str, Vec<&Channel>)> = Vec::new();
        for c in channels {
            let source = self.source_of(c);
            match out.iter_mut().find(|(s, _)| *s == source) {
                Some((_, cs)) => cs.push(c),
                None => out.push((source, vec![c])),
            }
        }
        out
    }

    pub fn sees_channel(&self, channel: &Channel) -> bool {
        self.channels.as_ref().is_none_or(|cs| cs.contains(channel))
    }

    pub fn sees_attr(&self, attr: Attr) -> bool {
        !self.blind_to.contains(&attr)
    }

    pub fn sees_event(&self, name: &EventName) -> bool {
        match name {
            EventName::Known(k) => !self.blind_events.contains(k),
            EventName::Other(_) => true,
        }
    }
}
