//! The event model: the reference's T-Library events.
//!
//! Every capture source (the embedded server's feed today; SIP-derived
//! events, logs and pcaps later) produces [`Event`]s on a [`Channel`], and
//! golden files are written in the same JSON form. An event is a name and an
//! ordered set of typed attributes; the attribute vocabulary is closed so
//! that a typo in a golden file is an error, not a silently ignored key.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

/// Where an event was reported: a DN's own T-Library channel, the
/// server's single call-monitoring stream, or the SCA wire layer of one
/// shared-line phone (what the BroadWorks model says it is told in SIP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Dn(String),
    Monitoring,
    Wire(String),
}

impl Channel {
    pub const MONITORING: &'static str = "monitoring";
    /// Prefix of wire channels: `sca.60970`.
    pub const WIRE_PREFIX: &'static str = "sca.";

    pub fn parse(s: &str) -> Channel {
        if s == Self::MONITORING {
            Channel::Monitoring
        } else if let Some(dn) = s.strip_prefix(Self::WIRE_PREFIX) {
            Channel::Wire(dn.to_string())
        } else {
            Channel::Dn(s.to_string())
        }
    }

    /// Which vocabulary the channel speaks.
    pub fn layer(&self) -> Layer {
        match self {
            Channel::Wire(_) => Layer::Wire,
            _ => Layer::TLib,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Dn(dn) => f.write_str(dn),
            Channel::Monitoring => f.write_str(Self::MONITORING),
            Channel::Wire(dn) => write!(f, "{}{dn}", Self::WIRE_PREFIX),
        }
    }
}

/// The two vocabularies: the Genesys page's T-Library events, and the SCA
/// wire facts of the BroadWorks model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    TLib,
    Wire,
}

/// Declares a closed vocabulary: an enum whose variants have canonical
/// spellings, with extra accepted spellings (the reference itself writes
/// "EventOffhook" and "OK"), matched case-insensitively.
macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident { $($var:ident => $canon:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $canon),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                $(
                    if s.eq_ignore_ascii_case($canon) $(|| s.eq_ignore_ascii_case($alias))* {
                        return Some($name::$var);
                    }
                )+
                None
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// T-Library event names used by the reference, and their neighbours.
    KnownEvent {
        OffHook => "EventOffHook",
        OnHook => "EventOnHook",
        Dialing => "EventDialing",
        Ringing => "EventRinging",
        Established => "EventEstablished",
        Released => "EventReleased",
        Held => "EventHeld",
        Retrieved => "EventRetrieved",
        PartyAdded => "EventPartyAdded",
        PartyChanged => "EventPartyChanged",
        PartyDeleted => "EventPartyDeleted",
        PrivateInfo => "EventPrivateInfo",
        Abandoned => "EventAbandoned",
        Diverted => "EventDiverted",
        NetworkReached => "EventNetworkReached",
        DestinationBusy => "EventDestinationBusy",
        CallCreated => "EventCallCreated",
        CallDeleted => "EventCallDeleted",
        CallPartyAdded => "EventCallPartyAdded",
        CallPartyState => "EventCallPartyState",
        CallPartyDeleted => "EventCallPartyDeleted",
        CallPartyMoved => "EventCallPartyMoved",
        CallDataChanged => "EventCallDataChanged",
        // The SCA wire layer (BroadWorks model), derived from SIP.
        Offered => "Offered",
        Cancelled => "Cancelled",
        Appearance => "Appearance",
        SeizeGranted => "SeizeGranted",
        SeizeRefused => "SeizeRefused",
        SeizeEnded => "SeizeEnded",
        InviteRefused => "InviteRefused",
        Subscribed => "Subscribed",
        SubscriptionEnded => "SubscriptionEnded",
        // The server's own state after a case (the leak check's `server`
        // channel): a subscription it still holds.
        Subscription => "Subscription",
    }
}

impl KnownEvent {
    pub fn layer(self) -> Layer {
        if self.as_str().starts_with("Event") {
            Layer::TLib
        } else {
            Layer::Wire
        }
    }
}

vocabulary! {
    /// An appearance's state in the BroadWorks SCA model (call-info).
    ApState {
        Idle => "idle",
        Seized => "seized",
        Progressing => "progressing",
        Alerting => "alerting",
        Active => "active",
        Held => "held",
        HeldPrivate => "held-private",
        BridgeActive => "bridge-active",
        BridgeHeld => "bridge-held",
    }
}

vocabulary! {
    /// TDNRole.
    Role {
        Unknown => "Unknown",
        Origination => "Origination",
        Destination => "Destination",
        ConferenceMember => "ConferenceMember",
        NewParty => "NewParty",
        AddedBy => "AddedBy",
        DeletedBy => "DeletedBy",
        TransferredBy => "TransferredBy",
        DeletedParty => "DeletedParty",
        ConferencedBy => "ConferencedBy",
        Observer => "Observer",
    }
}

vocabulary! {
    /// TCallState, plus the two values the SCA page uses (Covered, Redirected).
    CallState {
        Ok => "Ok",
        Transferred => "Transferred",
        Conferenced => "Conferenced",
        GeneralError => "GeneralError",
        SystemError => "SystemError",
        RemoteRelease => "RemoteRelease",
        Busy => "Busy",
        NoAnswer => "NoAnswer",
        Redirected => "Redirected",
        Forwarded => "Forwarded",
        Covered => "Covered",
        Dropped => "Dropped",
        Bridged => "Bridged",
        Held => "Held",
    }
}

vocabulary! {
    /// TCallType.
    CallType {
        Unknown => "Unknown",
        Internal => "Internal",
        Inbound => "Inbound",
        Outbound => "Outbound",
        Consult => "Consult",
    }
}

vocabulary! {
    /// Cause (TCallCause / ReferenceID-style cause names).
    Cause {
        Acd => "ACD",
        Busy => "Busy",
        NoAnswer => "NoAnswer",
        Reject => "Reject",
        Route => "Route",
        Coverage => "Coverage",
        ConverseOn => "ConverseOn",
        Forward => "Forward",
        Redirect => "Redirect",
        Transfer => "Transfer",
        OneStepTransfer => "1stepTransfer",
        Conference => "Conference",
    }
}

vocabulary! {
    /// A party's state in call-monitoring events.
    PartyState {
        Initiated => "Initiated",
        Dialing => "Dialing",
        ConnectedDialing => "Connected+Dialing",
        Alerting => "Alerting",
        Connected => "Connected",
        Held => "Held",
        Queued => "Queued",
    }
}

/// An event name: one of the known vocabulary, or (from a lenient source
/// such as a server's feed) a name we do not know, kept so it shows in diffs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    Known(KnownEvent),
    Other(String),
}

impl EventName {
    pub fn as_str(&self) -> &str {
        match self {
            EventName::Known(k) => k.as_str(),
            EventName::Other(s) => s,
        }
    }
}

impl From<KnownEvent> for EventName {
    fn from(k: KnownEvent) -> Self {
        EventName::Known(k)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of value an attribute holds; decides parsing and comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier the server chooses (ConnID, PartyID): golden files name
    /// it symbolically and the diff binds the symbol at first sight.
    Id(IdSpace),
    Dn,
    Role,
    CallState,
    CallType,
    Cause,
    PartyState,
    ApState,
    Int,
    Text,
}

/// Identifier namespaces: a symbol binds within its own space only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdSpace {
    ConnId,
    PartyId,
}

vocabulary! {
    /// The attribute vocabulary, in the order attributes are rendered.
    Attr {
        ConnId => "ConnID",
        ThisDn => "ThisDN",
        ThisDnRole => "ThisDNRole",
        OtherDn => "OtherDN",
        OtherDnRole => "OtherDNRole",
        ThirdPartyDn => "ThirdPartyDN",
        ThirdPartyDnRole => "ThirdPartyDNRole",
        Dn => "DN",
        PartyId => "PartyID",
        State => "State",
        CallState => "CallState",
        CallType => "CallType",
        Cause => "Cause",
        ServiceId => "ServiceId",
        // Wire-layer attributes.
        Index => "Index",
        AppearanceState => "AppearanceState",
        AppearanceUri => "AppearanceUri",
        Status => "Status",
        Expires => "Expires",
        Reason => "Reason",
        // What a server's own state holds for a line (the leak check's
        // `server` channel).
        Package => "Package",
        Subscriber => "Subscriber",
        Contact => "Contact",
        // T-Library Extensions (rendered inside "Extensions").
        AppearanceIndex => "AppearanceIndex",
    }
}

impl Attr {
    pub fn kind(self) -> Kind {
        match self {
            Attr::ConnId => Kind::Id(IdSpace::ConnId),
            Attr::PartyId => Kind::Id(IdSpace::PartyId),
            Attr::ThisDn | Attr::OtherDn | Attr::ThirdPartyDn | Attr::Dn | Attr::AppearanceUri => {
                Kind::Dn
            }
            Attr::ThisDnRole | Attr::OtherDnRole | Attr::ThirdPartyDnRole => Kind::Role,
            Attr::State => Kind::PartyState,
            Attr::CallState => Kind::CallState,
            Attr::CallType => Kind::CallType,
            Attr::Cause => Kind::Cause,
            Attr::ServiceId
            | Attr::AppearanceIndex
            | Attr::Index
            | Attr::Status
            | Attr::Expires => Kind::Int,
            Attr::AppearanceState => Kind::ApState,
            Attr::Reason | Attr::Package | Attr::Subscriber | Attr::Contact => Kind::Text,
        }
    }

    /// Attributes that T-Library carries in the Extensions key-value list.
    pub fn is_extension(self) -> bool {
        matches!(self, Attr::AppearanceIndex)
    }

    /// Does this attribute hold a DN (and so must name a known party)?
    pub fn is_dn(self) -> bool {
        self.kind() == Kind::Dn
    }
}

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Id(String),
    Dn(String),
    Role(Role),
    CallState(CallState),
    CallType(CallType),
    Cause(Cause),
    PartyState(PartyState),
    ApState(ApState),
    Int(i64),
    Text(String),
}

impl Value {
    /// Parses a JSON value as the given attribute's value.
    pub fn from_json(attr: Attr, json: &Json) -> Result<Value, String> {
        fn text(attr: Attr, json: &Json) -> Result<&str, String> {
            json.as_str()
                .ok_or_else(|| format!("{attr} must be a string, found {json}"))
        }
        fn word<T>(
            attr: Attr,
            json: &Json,
            parse: fn(&str) -> Option<T>,
            all: &[T],
        ) -> Result<T, String>
        where
            T: fmt::Display,
        {
            let s = text(attr, json)?;
            parse(s).ok_or_else(|| {
                let known: Vec<String> = all.iter().map(|v| v.to_string()).collect();
                format!("unknown {attr} {s:?} (known: {})", known.join(", "))
            })
        }
        Ok(match attr.kind() {
            Kind::Id(_) => match json {
                Json::String(s) if !s.is_empty() => Value::Id(s.clone()),
                Json::Number(n) => Value::Id(n.to_string()),
                _ => {
                    return Err(format!(
                        "{attr} must be a non-empty string or a number, found {json}"
                    ))
                }
            },
            Kind::Dn => {
                let s = text(attr, json)?;
                if s.is_empty() {
                    return Err(format!("{attr} must not be empty"));
                }
                Value::Dn(s.to_string())
            }
            Kind::Role => Value::Role(word(attr, json, Role::parse, Role::ALL)?),
            Kind::CallState => {
                Value::CallState(word(attr, json, CallState::parse, CallState::ALL)?)
            }
            Kind::CallType => Value::CallType(word(attr, json, CallType::parse, CallType::ALL)?),
            Kind::Cause => Value::Cause(word(attr, json, Cause::parse, Cause::ALL)?),
            Kind::PartyState => {
                Value::PartyState(word(attr, json, PartyState::parse, PartyState::ALL)?)
            }
            Kind::ApState => Value::ApState(word(attr, json, ApState::parse, ApState::ALL)?),
            Kind::Text => Value::Text(text(attr, json)?.to_string()),
            Kind::Int => match json {
                Json::Number(n) if n.as_i64().is_some() => {
                    Value::Int(n.as_i64().unwrap_or_default())
                }
                Json::String(s) if s.trim().parse::<i64>().is_ok() => {
                    Value::Int(s.trim().parse().unwrap_or_default())
                }
                _ => return Err(format!("{attr} must be an integer, found {json}")),
            },
        })
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Id(s) | Value::Dn(s) | Value::Text(s) => Json::String(s.clone()),
            Value::ApState(v) => Json::String(v.to_string()),
            Value::Role(v) => Json::String(v.to_string()),
            Value::CallState(v) => Json::String(v.to_string()),
            Value::CallType(v) => Json::String(v.to_string()),
            Value::Cause(v) => Json::String(v.to_string()),
            Value::PartyState(v) => Json::String(v.to_string()),
            Value::Int(i) => Json::from(*i),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Id(s) | Value::Dn(s) | Value::Text(s) => f.write_str(s),
            Value::ApState(v) => v.fmt(f),
            Value::Role(v) => v.fmt(f),
            Value::CallState(v) => v.fmt(f),
            Value::CallType(v) => v.fmt(f),
            Value::Cause(v) => v.fmt(f),
            Value::PartyState(v) => v.fmt(f),
            Value::Int(i) => i.fmt(f),
        }
    }
}

/// One T-Library event: a name and its attributes (ordered by [`Attr`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub name: EventName,
    pub attrs: BTreeMap<Attr, Value>,
}

/// How strictly to read an event's JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Golden files: every name and attribute must be known.
    Strict,
    /// Server feeds: unknown event names are kept (they must show in a diff);
    /// unknown attributes are reported back to the caller, not fatal.
    Lenient,
}

/// The JSON key holding the event name.
pub const EVENT_KEY: &str = "event";
/// The JSON key of the Extensions key-value list.
pub const EXTENSIONS_KEY: &str = "Extensions";

impl Event {
    pub fn new(name: impl Into<EventName>) -> Event {
        Event {
            name: name.into(),
            attrs: BTreeMap::new(),
        }
    }

    /// Builder-style attribute setter (used by the embedded server).
    pub fn with(mut self, attr: Attr, value: Value) -> Event {
        self.attrs.insert(attr, value);
        self
    }

    /// Sets an attribute only when there is a value (what a source saw).
    pub fn with_opt(self, attr: Attr, value: Option<Value>) -> Event {
        match value {
            Some(v) => self.with(attr, v),
            None => self,
        }
    }

    pub fn get(&self, attr: Attr) -> Option<&Value> {
        self.attrs.get(&attr)
    }

    /// Reads an event from a JSON object. `skip` names keys that belong to
    /// the envelope (such as a feed's `channel`) and are not attributes.
    /// Returns the event and the keys it ignored (lenient mode only).
    pub fn from_json(
        obj: &serde_json::Map<String, Json>,
        strictness: Strictness,
        skip: &[&str],
    ) -> Result<(Event, Vec<String>), String> {
        let name = match obj.get(EVENT_KEY) {
            Some(Json::String(s)) => match KnownEvent::parse(s) {
                Some(k) if strictness == Strictness::Strict && k.as_str() != s => {
                    return Err(format!(
                        "event name {s:?} is spelled {:?} in golden files",
                        k.as_str()
                    ))
                }
                Some(k) => EventName::Known(k),
                None if strictness == Strictness::Lenient && !s.is_empty() => {
                    EventName::Other(s.clone())
                }
                None => return Err(format!("unknown event name {s:?}")),
            },
            Some(other) => return Err(format!("\"{EVENT_KEY}\" must be a string, found {other}")),
            None => return Err(format!("missing \"{EVENT_KEY}\" (the event name)")),
        };
        let mut event = Event::new(name);
        let mut ignored = Vec::new();
        let mut put = |key: &str, json: &Json, in_ext: bool| -> Result<(), String> {
            match Attr::parse(key) {
                Some(attr) if strictness == Strictness::Strict && attr.as_str() != key => {
                    Err(format!(
                        "unknown attribute {key:?} (did you mean {:?}?)",
                        attr.as_str()
                    ))
                }
                Some(attr)
                    if attr.is_extension() == in_ext || strictness == Strictness::Lenient =>
                {
                    let value = Value::from_json(attr, json)?;
                    if event.attrs.insert(attr, value).is_some() {
                        return Err(format!("attribute {attr} given twice"));
                    }
                    Ok(())
                }
                Some(attr) if in_ext => Err(format!("{attr} is not an Extensions key")),
                Some(attr) => Err(format!("{attr} belongs inside \"{EXTENSIONS_KEY}\"")),
                None if strictness == Strictness::Lenient => {
                    ignored.push(if in_ext {
                        format!("{EXTENSIONS_KEY}.{key}")
                    } else {
                        key.to_string()
                    });
                    Ok(())
                }
                None => Err(format!("unknown attribute {key:?}")),
            }
        };
        for (key, json) in obj {
            if key == EVENT_KEY || skip.contains(&key.as_str()) {
                continue;
            }
            if key == EXTENSIONS_KEY {
                let ext = json
                    .as_object()
                    .ok_or_else(|| format!("\"{EXTENSIONS_KEY}\" must be an object"))?;
                for (k, v) in ext {
                    put(k, v, true)?;
                }
            } else {
                put(key, json, false)?;
            }
        }
        Ok((event, ignored))
    }

    /// The canonical one-line JSON form: name first, then attributes in
    /// vocabulary order, Extensions last. Golden files and diffs use it.
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push('{');
        push_pair(&mut out, EVENT_KEY, &Json::String(self.name.to_string()));
        for (attr, value) in self.attrs.iter().filter(|(a, _)| !a.is_extension()) {
            out.push_str(", ");
            push_pair(&mut out, attr.as_str(), &value.to_json());
        }
        let mut ext = self
            .attrs
            .iter()
            .filter(|(a, _)| a.is_extension())
            .peekable();
        if ext.peek().is_some() {
            out.push_str(", ");
            out.push_str(&Json::String(EXTENSIONS_KEY.into()).to_string());
            out.push_str(": {");
            for (i, (attr, value)) in ext.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_pair(&mut out, attr.as_str(), &value.to_json());
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

fn push_pair(out: &mut String, key: &str, value: &Json) {
    out.push_str(&Json::String(key.to_string()).to_string());
    out.push_str(": ");
    out.push_str(&value.to_string());
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> serde_json::Map<String, Json> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn round_trips_through_the_canonical_line() {
        let line = r#"{"event": "EventRinging", "ConnID": "$conn", "ThisDN": "60970", "CallState": "Covered", "Extensions": {"AppearanceIndex": 1}}"#;
        let (ev, ignored) = Event::from_json(&obj(line), Strictness::Strict, &[]).unwrap();
        assert!(ignored.is_empty());
        assert_eq!(ev.to_json_line(), line);
    }

    #[test]
    fn accepts_the_reference_spellings() {
        let (ev, _) = Event::from_json(
            &obj(r#"{"event": "EventOffhook", "CallState": "OK"}"#),
            Strictness::Lenient,
            &[],
        )
        .unwrap();
        assert_eq!(ev.name, EventName::Known(KnownEvent::OffHook));
        assert_eq!(
            ev.get(Attr::CallState),
            Some(&Value::CallState(CallState::Ok))
        );
    }

    #[test]
    fn strict_rejects_unknown_names_attributes_and_values() {
        let bad = [
            (r#"{"event": "EventRingin"}"#, "unknown event name"),
            (
                r#"{"event": "EventRinging", "ThisDn": "1"}"#,
                "unknown attribute",
            ),
            (
                r#"{"event": "EventRinging", "CallState": "Cover"}"#,
                "unknown CallState",
            ),
            (
                r#"{"event": "EventRinging", "AppearanceIndex": 1}"#,
                "inside \"Extensions\"",
            ),
            (r#"{"ThisDN": "1"}"#, "missing \"event\""),
            (r#"{"event": "EventOffhook"}"#, "spelled \"EventOffHook\""),
        ];
        for (line, want) in bad {
            let err = Event::from_json(&obj(line), Strictness::Strict, &[]).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn lenient_keeps_unknown_events_and_reports_unknown_keys() {
        let (ev, ignored) = Event::from_json(
            &obj(r#"{"channel": "60970", "event": "EventUserEvent", "Foo": 1, "Extensions": {"Bar": 2}}"#),
            Strictness::Lenient,
            &["channel"],
        )
        .unwrap();
        assert_eq!(ev.name, EventName::Other("EventUserEvent".into()));
        assert_eq!(
            ignored,
            vec!["Extensions.Bar".to_string(), "Foo".to_string()]
        );
    }
}
