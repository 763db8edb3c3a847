//! Our typed layer for the headers SCA lives in: Call-Info (appearances),
//! Event, Subscription-State and Reason. Parsing is order-independent and
//! lenient about what it does not need, strict about what it reads (an
//! appearance-index that is not a number, or an appearance-state outside
//! the model's vocabulary, makes Call-Info unreadable: an error a phone
//! reports, never a guess); it never panics on server input.

use std::fmt;

use super::{params, quote, split_list, NameAddr};

/// An appearance's state: the closed vocabulary of the BroadWorks SCA model
/// (one list for the wire and the golden files).
pub use crate::model::ApState;

/// `appearance-index`: a number, or `*` for "all the others".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppearanceIndex {
    Index(u32),
    All,
}

impl fmt::Display for AppearanceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppearanceIndex::Index(i) => i.fmt(f),
            AppearanceIndex::All => f.write_str("*"),
        }
    }
}

/// One Call-Info element that carries an appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appearance {
    /// The element's URI (`sip:DOMAIN` in the BroadWorks model).
    pub target: String,
    pub index: AppearanceIndex,
    pub state: Option<ApState>,
    /// `appearance-uri`, unquoted: the other party of the call.
    pub uri: Option<String>,
}

impl Appearance {
    /// Renders the element as a Call-Info value.
    pub fn to_header(&self) -> String {
        let mut s = format!("<{}>;appearance-index={}", self.target, self.index);
        if let Some(state) = &self.state {
            s.push_str(&format!(";appearance-state={state}"));
        }
        if let Some(uri) = &self.uri {
            s.push_str(&format!(";appearance-uri={}", quote(uri)));
        }
        s
    }
}

/// The first numeric appearance-index in a message's Call-Info (an offer's,
/// a seize's or a join's appearance); `*` and unreadable Call-Info name none.
pub fn first_index(msg: &super::Message) -> Option<u32> {
    let all = msg.appearances().ok()?;
    all.iter().find_map(|ap| match ap.index {
        AppearanceIndex::Index(i) => Some(i),
        AppearanceIndex::All => None,
    })
}

/// Reads every appearance in a message's Call-Info values (elements without
/// `appearance-index` are other uses of Call-Info and are skipped).
pub fn appearances<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Appearance>, String> {
    let mut out = Vec::new();
    for value in values {
        for element in split_list(value) {
            let addr = NameAddr::parse(&element)
                .ok_or_else(|| format!("Call-Info element {element:?} is not <uri>;params"))?;
            let mut index = None;
            let mut state = None;
            let mut uri = None;
            for (k, v) in params(&element) {
                match (k.as_str(), v) {
                    ("appearance-index", Some(v)) if v.trim() == "*" => {
                        index = Some(AppearanceIndex::All)
                    }
                    ("appearance-index", Some(v)) => {
                        let n = v
                            .trim()
                            .parse()
                            .map_err(|_| format!("appearance-index {v:?} is not a number"))?;
                        index = Some(AppearanceIndex::Index(n));
                    }
                    // A state outside the vocabulary is not some state we
                    // may guess (idle, say): the element cannot be read.
                    ("appearance-state", Some(v)) => {
                        let named = ApState::parse(v.trim()).ok_or_else(|| {
                            format!("appearance-state {v:?} is not a state of the SCA model")
                        })?;
                        state = Some(named);
                    }
                    ("appearance-uri", Some(v)) => uri = Some(v),
                    _ => {}
                }
            }
            if let Some(index) = index {
                out.push(Appearance {
                    target: addr.uri,
                    index,
                    state,
                    uri,
                });
            }
        }
    }
    Ok(out)
}

/// The Event header: package and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    pub package: String,
    pub id: Option<String>,
}

impl EventHeader {
    pub fn parse(value: &str) -> Option<EventHeader> {
        let package = value.split(';').next()?.trim().to_ascii_lowercase();
        if package.is_empty() {
            return None;
        }
        let id = params(value)
            .into_iter()
            .find(|(k, _)| k == "id")
            .and_then(|(_, v)| v);
        Some(EventHeader { package, id })
    }
}

/// Subscription-State substates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
    Terminated,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub state: SubState,
    pub expires: Option<u32>,
    pub reason: Option<String>,
}

impl SubscriptionState {
    pub fn parse(value: &str) -> Option<SubscriptionState> {
        let word = value.split(';').next()?.trim().to_ascii_lowercase();
        let state = match word.as_str() {
            "" => return None,
            "active" => SubState::Active,
            "pending" => SubState::Pending,
            "terminated" => SubState::Terminated,
            _ => SubState::Other(word.clone()),
        };
        let mut expires = None;
        let mut reason = None;
        for (k, v) in params(value) {
            match k.as_str() {
                "expires" => expires = v.and_then(|v| v.trim().parse().ok()),
                "reason" => reason = v,
                _ => {}
            }
        }
        Some(SubscriptionState {
            state,
            expires,
            reason,
        })
    }
}

/// The Reason header (RFC 3326).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub protocol: String,
    pub cause: Option<u16>,
    pub text: Option<String>,
}

impl Reason {
    /// One reason-value, or None when it cannot be read as RFC 3326 writes
    /// it: a protocol token, a numeric cause, a text that is a
    /// quoted-string. A half-read value would report a text nobody sent
    /// (an unterminated quote read as far as it goes).
    pub fn parse(value: &str) -> Option<Reason> {
        let protocol = value.split(';').next()?.trim().to_string();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        };
        if !token(&protocol) {
            return None;
        }
        let mut cause = None;
        let mut text = None;
        for (k, v) in super::raw_params(value) {
            match k.as_str() {
                "cause" => cause = Some(v?.parse().ok()?),
                "text" => text = Some(super::quoted_string(v?)?),
                _ => {}
            }
        }
        Some(Reason {
            protocol,
            cause,
            text,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        if let Some(c) = self.cause {
            write!(f, ";cause={c}")?;
        }
        if let Some(t) = &self.text {
            write!(f, ";text={}", quote(t))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_appearances_in_any_parameter_order() {
        let v = [
            r#"<sip:sca.test>;appearance-uri="\"Bob\" <sip:60972@sca.test>";appearance-state=held;appearance-index=1"#,
            "<sip:sca.test>;appearance-index=*;appearance-state=idle, <http://x/icon>;purpose=icon",
        ];
        let a = appearances(v).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].index, AppearanceIndex::Index(1));
        assert_eq!(a[0].state, Some(ApState::Held));
        assert_eq!(a[0].uri.as_deref(), Some(r#""Bob" <sip:60972@sca.test>"#));
        assert_eq!(a[1].index, AppearanceIndex::All);
        assert_eq!(a[1].state, Some(ApState::Idle));
    }

    #[test]
    fn appearance_renders_and_reparses() {
        let a = Appearance {
            target: "sip:sca.test".into(),
            index: AppearanceIndex::Index(1),
            state: Some(ApState::Alerting),
            uri: Some(r#""60972" <sip:60972@sca.test>"#.into()),
        };
        assert_eq!(appearances([a.to_header().as_str()]).unwrap(), vec![a]);
    }

    #[test]
    fn bad_index_or_unknown_state_is_an_error_not_a_panic() {
        for (value, says) in [
            (
                "<sip:x>;appearance-index=one",
                "appearance-index \"one\" is not a number",
            ),
            ("<sip:x>;appearance-index=99999999999", "is not a number"),
            (
                "<sip:x>;appearance-index=1;appearance-state=ringing",
                "appearance-state \"ringing\" is not a state of the SCA model",
            ),
            ("no brackets <here", "is not <uri>;params"),
        ] {
            let e = appearances([value]).unwrap_err();
            assert!(e.contains(says), "{value}: {e}");
        }
        // The vocabulary is matched as the model matches it.
        let a = appearances(["<sip:x>;appearance-index=1;appearance-state=Held-Private"]).unwrap();
        assert_eq!(a[0].state, Some(ApState::HeldPrivate));
    }

    #[test]
    fn an_unreadable_reason_is_none_not_half_read() {
        for value in [
            r#"SIP;cause=200;text="unterminated"#,
            r#"SIP;cause=200;text="escaped end\""#,
            "SIP;text=unquoted",
            "SIP;text=",
            "SIP;text",
            r#"SIP;cause=two;text="x""#,
            r#";text="no protocol""#,
            r#""SIP";cause=200"#,
            "",
        ] {
            assert_eq!(Reason::parse(value), None, "{value}");
        }
    }

    #[test]
    fn reads_subscription_state_reason_and_event() {
        let s = SubscriptionState::parse("terminated;reason=noresource").unwrap();
        assert_eq!(
            (s.state, s.reason.as_deref()),
            (SubState::Terminated, Some("noresource"))
        );
        assert_eq!(
            SubscriptionState::parse("active;expires=3600")
                .unwrap()
                .expires,
            Some(3600)
        );
        let r = Reason::parse(r#"SIP;cause=200;text="Call completed elsewhere""#).unwrap();
        assert_eq!(r.cause, Some(200));
        assert_eq!(r.text.as_deref(), Some("Call completed elsewhere"));
        assert_eq!(Reason::parse(&r.to_string()), Some(r));
        assert_eq!(
            Reason::parse("Q.850;cause=16").map(|r| (r.protocol, r.cause, r.text)),
            Some(("Q.850".to_string(), Some(16), None))
        );
        assert_eq!(
            EventHeader::parse("Call-Info;id=7").unwrap().package,
            "call-info"
        );
    }
}
