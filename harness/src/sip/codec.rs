//! The adapter around rsipstack's codec. This is the only file that names
//! rsipstack: the rest of scacheck sees [`Message`], which keeps the bytes
//! exactly as they crossed the wire next to the parsed form, because a
//! conformance verdict is about what the server actually sent.

use std::fmt;
use std::sync::OnceLock;

use rsipstack::sip::{self as rsip, parser::parse_message, SipMessage};

/// Why a datagram or stream frame is not a SIP message we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparseable SIP message: {reason}")]
pub struct ParseError {
    pub reason: String,
}

/// A parsed SIP message together with its raw bytes.
#[derive(Clone)]
pub struct Message {
    raw: Vec<u8>,
    parsed: SipMessage,
    start_line: String,
    /// From and To, read when first asked for: the derivers, the phones'
    /// reading and a capture check's detection each ask for them (and
    /// their tags) of every message.
    from: OnceLock<Option<super::NameAddr>>,
    to: OnceLock<Option<super::NameAddr>>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("start_line", &self.start_line)
            .finish()
    }
}

impl Message {
    /// Parses one whole message (a datagram, or a frame cut by
    /// [`super::framing::StreamFramer`]).
    pub fn parse(raw: Vec<u8>) -> Result<Message, ParseError> {
        let err = |reason: String| ParseError { reason };
        // rsipstack does not check these; a message that fails them would
        // make every later accessor lie.
        let head_end =
            find(&raw, b"\r\n\r\n").ok_or_else(|| err("no end of headers (CRLF CRLF)".into()))?;
        let start_line = std::str::from_utf8(&raw[..find(&raw, b"\r\n").unwrap_or(head_end)])
            .map_err(|_| err("start line is not UTF-8".into()))?
            .to_string();
        // The stream framer's rule, so that a length is refused alike over
        // UDP and TCP: unreadable (twenty digits included) or past the
        // bound. A datagram may carry more than its Content-Length (RFC 3261
        // 18.3 discards the rest), never less.
        let declared =
            super::framing::content_length(&raw[..head_end]).map_err(|e| err(e.to_string()))?;
        let have = raw.len() - head_end - 4;
        if have < declared {
            return Err(err(format!(
                "body is {have} bytes, Content-Length says {declared}"
            )));
        }
        let parsed = parse_message(&raw).map_err(|e| err(e.to_string()))?;
        let msg = Message {
            raw,
            parsed,
            start_line,
            from: OnceLock::new(),
            to: OnceLock::new(),
        };
        for name in ["Call-ID", "CSeq", "From", "To", "Via"] {
            if msg.header(name).is_none() {
                return Err(err(format!("missing mandatory header {name}")));
            }
        }
        if msg.cseq().is_none() {
            return Err(err(format!(
                "malformed CSeq {:?}",
                msg.header("CSeq").unwrap_or("")
            )));
        }
        Ok(msg)
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn start_line(&self) -> &str {
        &self.start_line
    }

    pub fn is_request(&self) -> bool {
        self.parsed.is_request()
    }

    /// The method of a request, or `None` for a response.
    pub fn method(&self) -> Option<String> {
        match &self.parsed {
            SipMessage::Request(r) => Some(r.method.to_string()),
            SipMessage::Response(_) => None,
        }
    }

    /// True for a request of this method.
    pub fn is(&self, method: &str) -> bool {
        self.method().is_some_and(|m| m == method)
    }

    /// The Request-URI exactly as sent.
    pub fn request_uri(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line.split_whitespace().nth(1))
            .flatten()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.parsed {
            SipMessage::Response(r) => Some(r.status_code.code()),
            SipMessage::Request(_) => None,
        }
    }

    /// Every value of a header (canonical name, compact forms included), in
    /// order. One header line yields one value; lists inside it are split by
    /// the typed layer.
    pub fn headers<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let headers: &rsip::Headers = match &self.parsed {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        };
        headers
            .iter()
            .filter(move |h| h.name().eq_ignore_ascii_case(name))
            .map(|h| h.value())
    }

    /// The first value of a header.
    pub fn header<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.headers(name).next()
    }

    pub fn body(&self) -> &[u8] {
        match &self.parsed {
            SipMessage::Request(r) => &r.body,
            SipMessage::Response(r) => &r.body,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default().trim()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let mut it = self.header("CSeq")?.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?))
    }

    pub fn from(&self) -> Option<super::NameAddr> {
        self.parsed_from().cloned()
    }

    pub fn to(&self) -> Option<super::NameAddr> {
        self.parsed_to().cloned()
    }

    fn parsed_from(&self) -> Option<&super::NameAddr> {
        self.from
            .get_or_init(|| super::NameAddr::parse(self.header("From")?))
            .as_ref()
    }

    fn parsed_to(&self) -> Option<&super::NameAddr> {
        self.to
            .get_or_init(|| super::NameAddr::parse(self.header("To")?))
            .as_ref()
    }

    pub fn from_tag(&self) -> Option<String> {
        self.parsed_from()?.param("tag").map(str::to_string)
    }

    pub fn to_tag(&self) -> Option<String> {
        self.parsed_to()?.param("tag").map(str::to_string)
    }

    /// The branch of the topmost Via.
    pub fn via_branch(&self) -> Option<String> {
        let top = super::split_list(self.header("Via")?).into_iter().next()?;
        super::params(&top)
            .into_iter()
            .find_map(|(k, v)| (k.eq_ignore_ascii_case("branch")).then_some(v?))
    }

    /// The URI of the first Contact.
    pub fn contact_uri(&self) -> Option<String> {
        let first = super::split_list(self.header("Contact")?)
            .into_iter()
            .next()?;
        Some(super::NameAddr::parse(&first)?.uri)
    }

    /// One line for logs and ladders: the start line and the Call-ID.
    pub fn summary(&self) -> String {
        self.start_line.clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:60970@127.0.0.1:5070 SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
        f: <sip:60970@sca.test>;tag=abc\r\n\
        t: <sip:60970@sca.test>;tag=def\r\n\
        i: call-1\r\n\
        CSeq: 2 NOTIFY\r\n\
        o: call-info\r\n\
        Call-Info: <sip:sca.test>;appearance-index=1;appearance-state=alerting;\r\n \
        appearance-uri=\"\\\"Bob\\\" <sip:60972@sca.test>\"\r\n\
        l: 0\r\n\r\n";

    #[test]
    fn reads_compact_and_folded_headers() {
        let m = Message::parse(NOTIFY.as_bytes().to_vec()).unwrap();
        assert!(m.is("NOTIFY"));
        assert_eq!(m.call_id(), "call-1");
        assert_eq!(m.header("Event"), Some("call-info"));
        assert_eq!(m.from_tag().as_deref(), Some("abc"));
        assert_eq!(m.to_tag().as_deref(), Some("def"));
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bK1"));
        assert_eq!(m.cseq(), Some((2, "NOTIFY")));
        assert!(m.header("Call-Info").unwrap().contains("appearance-uri="));
        assert_eq!(m.raw(), NOTIFY.as_bytes());
    }

    #[test]
    fn a_datagram_may_carry_more_than_its_content_length() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 1\r\n\r\nabc";
        assert!(Message::parse(raw.as_bytes().to_vec()).is_ok());
    }

    #[test]
    fn rejects_what_would_make_accessors_lie() {
        for (raw, want) in [
            ("garbage", "end of headers"),
            ("INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n", "mandatory header"),
            ("FOO sip:a@b SIP/2.0\r\n\r\n", "method"),
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: one\r\n\r\n",
                "CSeq",
            ),
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 10\r\n\r\nabc",
                "Content-Length",
            ),
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
                "unreadable Content-Length \"99999999999999999999\"",
            ),
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nl: 2000000\r\n\r\nabc",
                "Content-Length 2000000 exceeds the 1048576-byte limit",
            ),
            (
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: -1\r\n\r\n",
                "unreadable Content-Length",
            ),
        ] {
            let err = Message::parse(raw.as_bytes().to_vec()).unwrap_err();
            assert!(err.reason.to_lowercase().contains(&want.to_lowercase()), "{raw:?}: {err}");
        }
    }
}
