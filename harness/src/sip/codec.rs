//! The adapter around rsipstack's codec. This is the only file that names
//! rsipstack: the rest of scacheck sees [`Message`], which keeps the bytes
//! exactly as they crossed the wire next to the parsed form, because a
//! conformance verdict is about what the server actually sent.
//!
//! A message is read in one pass into an index of its header lines
//! ([`Message::parse`]): the same lines, folding, trimming, names (compact
//! forms too) and body as rsipstack's `parse_message` makes of it, its
//! start line read by rsipstack's own parsers of a method, a Request-URI,
//! a version and a status code. `parse_message` refuses a message only by
//! its start line (every header line is kept, as an untyped header), so
//! the index accepts and refuses what rsipstack does, with its words; the
//! tests below hold it to that, header by header, on every message of the
//! fixtures' captures and on hostile bytes. rsipstack's own `SipMessage`
//! (every header a `String` of its own, some two dozen allocations a
//! message) is never built: nothing scacheck asks of a message needs it.

use std::fmt;
use std::sync::OnceLock;

use rsipstack::sip::{self as rsip, Method, StatusCode, Version};

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
    start_line: String,
    kind: Kind,
    /// Every header's value (and an unknown header's name) as rsipstack
    /// reads it, trimmed and unfolded, one after another.
    text: String,
    /// The header lines in order.
    fields: Vec<Field>,
    /// Where the body lies in `raw`.
    body: std::ops::Range<usize>,
    /// From and To, read when first asked for: the derivers, the phones'
    /// reading and a capture check's detection each ask for them (and
    /// their tags) of every message.
    from: OnceLock<Option<super::NameAddr>>,
    to: OnceLock<Option<super::NameAddr>>,
    /// Its Call-Info's appearances, read when first asked for (the phones'
    /// reading, both derivers and a capture's actions ask).
    appearances: OnceLock<Result<Vec<super::headers::Appearance>, String>>,
}

#[derive(Clone)]
enum Kind {
    /// Its method, as rsipstack's `Method` writes it, in `text`.
    Request(std::ops::Range<usize>),
    Response(StatusCode),
}

/// One header line: its name as rsipstack's `Header::name` gives it and
/// its value, both in [`Message::text`] unless a known name.
#[derive(Clone)]
struct Field {
    name: Name,
    value: std::ops::Range<usize>,
}

#[derive(Clone)]
enum Name {
    /// A header rsipstack knows (long or compact form), by its own name.
    Known(&'static str),
    /// Any other, as written (trimmed).
    Other(std::ops::Range<usize>),
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("start_line", &self.start_line)
            .finish()
    }
}

/// The name rsipstack's `make_header` gives a header line's (trimmed)
/// name, when it knows it: `make_header`'s table, compact forms included
/// (tested against it below).
pub fn known_name(name: &str) -> Option<&'static str> {
    let mut buf = [0u8; 24];
    let bytes = name.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..bytes.len()];
    lower.copy_from_slice(bytes);
    lower.make_ascii_lowercase();
    Some(match &*lower {
        b"accept" => "Accept",
        b"accept-encoding" => "Accept-Encoding",
        b"accept-language" => "Accept-Language",
        b"alert-info" => "Alert-Info",
        b"allow" => "Allow",
        b"authentication-info" => "Authentication-Info",
        b"authorization" => "Authorization",
        b"cseq" => "CSeq",
        b"call-id" | b"i" => "Call-ID",
        b"call-info" => "Call-Info",
        b"contact" | b"m" => "Contact",
        b"content-disposition" => "Content-Disposition",
        b"content-encoding" | b"e" => "Content-Encoding",
        b"content-language" => "Content-Language",
        b"content-length" | b"l" => "Content-Length",
        b"content-type" | b"c" => "Content-Type",
        b"date" => "Date",
        b"error-info" => "Error-Info",
        b"event" | b"o" => "Event",
        b"expires" => "Expires",
        b"from" | b"f" => "From",
        b"in-reply-to" => "In-Reply-To",
        b"max-forwards" => "Max-Forwards",
        b"mime-version" => "Mime-Version",
        b"min-expires" => "Min-Expires",
        b"organization" => "Organization",
        b"priority" => "Priority",
        b"proxy-authenticate" => "Proxy-Authenticate",
        b"proxy-authorization" => "Proxy-Authorization",
        b"proxy-require" => "Proxy-Require",
        b"record-route" => "Record-Route",
        b"reply-to" => "Reply-To",
        b"require" => "Require",
        b"retry-after" => "Retry-After",
        b"route" => "Route",
        b"service-route" => "Service-Route",
        b"server" => "Server",
        b"subject" | b"s" => "Subject",
        b"subscription-state" => "Subscription-State",
        b"supported" | b"k" => "Supported",
        b"timestamp" => "Timestamp",
        b"to" | b"t" => "To",
        b"unsupported" => "Unsupported",
        b"user-agent" => "User-Agent",
        b"via" | b"v" => "Via",
        b"warning" => "Warning",
        b"www-authenticate" => "WWW-Authenticate",
        b"reason" => "Reason",
        b"refer-to" | b"r" => "Refer-To",
        b"referred-by" | b"b" => "Referred-By",
        b"session-expires" | b"x" => "Session-Expires",
        b"min-se" => "Min-SE",
        b"p-asserted-identity" => "P-Asserted-Identity",
        b"p-preferred-identity" => "P-Preferred-Identity",
        b"replaces" => "Replaces",
        b"rseq" => "RSeq",
        b"rack" => "RAck",
        b"privacy" => "Privacy",
        b"path" => "Path",
        b"identity" => "Identity",
        b"user-to-user" => "User-to-User",
        b"session-id" => "Session-ID",
        b"history-info" => "History-Info",
        b"diversion" => "Diversion",
        _ => return None,
    })
}

/// rsipstack's line splitter: at each LF, a CR before it dropped; a line
/// that is not UTF-8 ends the lines.
struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.data.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.data[start..];
        let (end, next) = match memchr::memchr(b'\n', rest) {
            Some(lf) if lf > 0 && rest[lf - 1] == b'\r' => (start + lf - 1, start + lf + 1),
            Some(lf) => (start + lf, start + lf + 1),
            None => (self.data.len(), self.data.len()),
        };
        self.pos = next;
        std::str::from_utf8(&self.data[start..end]).ok()
    }
}

/// What rsipstack's `parse_message` makes of `data`, as an index.
struct Index {
    kind: Kind,
    text: String,
    fields: Vec<Field>,
    body: std::ops::Range<usize>,
}

/// rsipstack's `parse_message`, step by step, keeping spans where it keeps
/// strings: the same lines, folds, names and values, the same body, and
/// the same start line parsers, so the same errors.
fn index(data: &[u8]) -> Result<Index, rsip::Error> {
    let perr = |what: &str| rsip::Error::ParseError(what.into());
    let sep = super::find_crlf_crlf(data)
        .ok_or_else(|| perr("SIP message: missing \\r\\n\\r\\n separator"))?;
    let body_start = sep + 4;
    let mut lines = Lines {
        data: &data[..sep],
        pos: 0,
    };
    let start_line = lines
        .next()
        .ok_or_else(|| perr("SIP message: empty start line"))?;
    let mut text = String::with_capacity(sep);
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    let mut content_length: usize = 0;
    // The header being read (its value may go on on folded lines): its
    // name and where its value begins in `text`.
    let mut pending: Option<(Name, usize)> = None;
    let mut finish = |(name, from): (Name, usize), text: &str, fields: &mut Vec<Field>| {
        if matches!(name, Name::Known("Content-Length")) {
            content_length = text[from..].trim().parse().unwrap_or(0);
        }
        fields.push(Field {
            name,
            value: from..text.len(),
        });
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.as_bytes()[0] == b' ' || line.as_bytes()[0] == b'\t' {
            if let Some((_, from)) = &pending {
                if text.len() - from > 4096 {
                    tracing::warn!(
                        len = text.len() - from,
                        "parser: folded header value exceeds 4 KiB — likely misframed stream"
                    );
                }
                text.push(' ');
                text.push_str(line.trim());
            }
            continue;
        }
        if let Some(p) = pending.take() {
            finish(p, &text, &mut fields);
        }
        if let Some(colon) = line.find(':') {
            let name = line[..colon].trim();
            let name = match known_name(name) {
                Some(known) => Name::Known(known),
                None => {
                    let from = text.len();
                    text.push_str(name);
                    Name::Other(from..text.len())
                }
            };
            let from = text.len();
            text.push_str(line[colon + 1..].trim());
            pending = Some((name, from));
        }
    }
    if let Some(p) = pending {
        finish(p, &text, &mut fields);
    }
    let body = if body_start < data.len() {
        let take = (data.len() - body_start).min(content_length);
        body_start..body_start + take
    } else {
        0..0
    };
    let kind = if start_line.starts_with("SIP/") {
        let mut parts = start_line.splitn(3, [' ', '\t']);
        let version = parts
            .next()
            .ok_or_else(|| perr("Status-Line: missing version"))?;
        let code = parts
            .next()
            .ok_or_else(|| perr("Status-Line: missing status code"))?;
        let reason = parts.next().unwrap_or("").trim();
        version.parse::<Version>()?;
        let code: u16 = code
            .parse()
            .map_err(|_| perr(&format!("Status-Line: invalid code {code:?}")))?;
        Kind::Response(StatusCode::try_from((code, reason))?)
    } else {
        let mut parts = start_line.splitn(3, [' ', '\t']);
        let method = parts
            .next()
            .ok_or_else(|| perr("Request-Line: missing method"))?;
        let uri = parts
            .next()
            .ok_or_else(|| perr("Request-Line: missing URI"))?;
        let version = parts
            .next()
            .ok_or_else(|| perr("Request-Line: missing version"))?
            .trim();
        let method: Method = method.parse()?;
        rsip::parse_uri(uri.trim())?;
        version.parse::<Version>()?;
        let from = text.len();
        {
            use std::fmt::Write;
            let _ = write!(text, "{method}");
        }
        Kind::Request(from..text.len())
    };
    Ok(Index {
        kind,
        text,
        fields,
        body,
    })
}

impl Message {
    /// Parses one whole message (a datagram, or a frame cut by
    /// [`super::framing::StreamFramer`]).
    pub fn parse(raw: Vec<u8>) -> Result<Message, ParseError> {
        let err = |reason: String| ParseError { reason };
        // rsipstack does not check these; a message that fails them would
        // make every later accessor lie.
        let head_end = super::find_crlf_crlf(&raw)
            .ok_or_else(|| err("no end of headers (CRLF CRLF)".into()))?;
        let line_end = super::find_crlf(&raw[..head_end + 2]).unwrap_or(head_end);
        let start_line = std::str::from_utf8(&raw[..line_end])
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
        let Index {
            kind,
            text,
            fields,
            body,
        } = index(&raw).map_err(|e| err(e.to_string()))?;
        let msg = Message {
            raw,
            start_line,
            kind,
            text,
            fields,
            body,
            from: OnceLock::new(),
            to: OnceLock::new(),
            appearances: OnceLock::new(),
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
        matches!(self.kind, Kind::Request(_))
    }

    /// The method of a request, or `None` for a response.
    pub fn method(&self) -> Option<String> {
        self.method_name().map(str::to_string)
    }

    /// True for a request of this method.
    pub fn is(&self, method: &str) -> bool {
        self.method_name() == Some(method)
    }

    /// The method's name as rsipstack writes it (in `text`).
    fn method_name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request(at) => Some(&self.text[at.clone()]),
            Kind::Response(_) => None,
        }
    }

    /// The Request-URI exactly as sent.
    pub fn request_uri(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line.split_whitespace().nth(1))
            .flatten()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            Kind::Response(s) => Some(s.code()),
            Kind::Request(_) => None,
        }
    }

    /// Every value of a header (canonical name, compact forms included), in
    /// order. One header line yields one value; lists inside it are split by
    /// the typed layer.
    pub fn headers<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.fields
            .iter()
            .filter(move |f| self.name_of(f).eq_ignore_ascii_case(name))
            .map(|f| &self.text[f.value.clone()])
    }

    fn name_of<'a>(&'a self, f: &'a Field) -> &'a str {
        match &f.name {
            Name::Known(n) => n,
            Name::Other(at) => &self.text[at.clone()],
        }
    }

    /// The first value of a header.
    pub fn header<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.headers(name).next()
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.body.clone()]
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

    /// [`super::headers::appearances`] of its Call-Info values, read once.
    pub fn appearances(&self) -> Result<&[super::headers::Appearance], &str> {
        self.appearances
            .get_or_init(|| super::headers::appearances(self.headers("Call-Info")))
            .as_deref()
            .map_err(String::as_str)
    }

    pub fn from_tag(&self) -> Option<String> {
        self.parsed_from()?.param("tag").map(str::to_string)
    }

    pub fn to_tag(&self) -> Option<String> {
        self.parsed_to()?.param("tag").map(str::to_string)
    }

    /// The dialog a message is in, as its From- and To-tags in sorted
    /// order: the same for both sides of the dialog and for requests either
    /// way (None without both tags).
    pub fn dialog_tags(&self) -> Option<(String, String)> {
        let (a, b) = (self.from_tag()?, self.to_tag()?);
        Some(if a <= b { (a, b) } else { (b, a) })
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

    /// The address the first Contact names, when it names one by IP
    /// (`sip:u@127.0.0.1:5070;transport=tcp` -> 127.0.0.1:5070): where a
    /// new connection to the sender goes.
    pub fn contact_addr(&self) -> Option<std::net::SocketAddr> {
        super::uri_addr(&self.contact_uri()?)
    }

    /// One line for logs and ladders: the start line and the Call-ID.
    pub fn summary(&self) -> String {
        self.start_line.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::sip::SipMessage;

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

    /// What the index makes of `raw` next to what rsipstack's
    /// `parse_message` does: accepted or refused alike (in its words), and
    /// if accepted, the same headers (names and values, in order), body,
    /// method and status.
    fn same_as_rsipstack(raw: &[u8]) {
        use rsipstack::sip::parser::parse_message;
        let theirs = parse_message(raw);
        let ours = index(raw);
        let (m, ix) = match (theirs, ours) {
            (Ok(m), Ok(ix)) => (m, ix),
            (Err(a), Err(b)) => {
                assert_eq!(
                    a.to_string(),
                    b.to_string(),
                    "{:?}",
                    String::from_utf8_lossy(raw)
                );
                return;
            }
            (a, b) => panic!(
                "rsipstack {:?}, index {:?}: {:?}",
                a.err(),
                b.err(),
                String::from_utf8_lossy(raw)
            ),
        };
        let (headers, body, kind) = match &m {
            SipMessage::Request(r) => (&r.headers, &r.body, r.method.to_string()),
            SipMessage::Response(r) => (&r.headers, &r.body, r.status_code.code().to_string()),
        };
        let theirs: Vec<(&str, &str)> = headers.iter().map(|h| (h.name(), h.value())).collect();
        let ours: Vec<(&str, &str)> = ix
            .fields
            .iter()
            .map(|f| {
                let name = match &f.name {
                    Name::Known(n) => n,
                    Name::Other(at) => &ix.text[at.clone()],
                };
                (name, &ix.text[f.value.clone()])
            })
            .collect();
        let text = String::from_utf8_lossy(raw);
        assert_eq!(ours, theirs, "{text:?}");
        assert_eq!(&raw[ix.body.clone()], &body[..], "{text:?}");
        let ours = match &ix.kind {
            Kind::Request(at) => ix.text[at.clone()].to_string(),
            Kind::Response(s) => s.code().to_string(),
        };
        assert_eq!(ours, kind, "{text:?}");
    }

    /// Every SIP message of the fixtures' captures.
    fn fixture_messages() -> Vec<Vec<u8>> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path
                    .extension()
                    .is_some_and(|x| x == "pcap" || x == "pcapng")
                {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures");
        walk(&root, &mut files);
        assert!(files.len() >= 20, "{} capture files", files.len());
        let mut out = Vec::new();
        for f in files {
            let mut reader = crate::pcap::Reader::open(&f).unwrap();
            while let Ok(Some(p)) = reader.next_packet() {
                out.push(p.raw);
            }
        }
        out
    }

    #[test]
    fn the_index_reads_every_captured_message_as_rsipstack_does() {
        let all = fixture_messages();
        assert!(all.len() > 1000, "{} messages", all.len());
        for raw in &all {
            same_as_rsipstack(raw);
        }
    }

    const HOSTILE: &[&[u8]] = &[
        b"",
        b"\r\n\r\n",
        b"\r\n\r\nbody",
        b"\n\r\n\r\n",
        b"garbage",
        b"INVITE sip:a@b SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0",
        b"invite sip:a@b sip/2.0\r\nv: x\r\n\r\n",
        b"INVITE\tsip:a@b\tSIP/2.0\r\n\r\n",
        b"INVITE  SIP/2.0\r\n\r\n",
        b"INVITE sip: SIP/2.0\r\n\r\n",
        b"INVITE sip:bob@ SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"FOO sip:a@b SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b SIP/3.0\r\n\r\n",
        b"INVITE sip:a@b HTTP/1.1\r\n\r\n",
        b"INVITE tel:+15551234567 SIP/2.0\r\n\r\n",
        b"INVITE sip:[::1]:5060 SIP/2.0\r\n\r\n",
        b"INVITE sip:a@b:99999 SIP/2.0\r\n\r\n",
        b"INVITE sips:a@b;transport=tls SIP/2.0 \r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 200\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"SIP/2.0 99999 OK\r\n\r\n",
        b"SIP/2.0 -1 OK\r\n\r\n",
        b"SIP/2.0 0 Zero\r\n\r\n",
        b"SIP/2.0 999 Odd\r\n\r\n",
        b"SIP/2.5 200 OK\r\n\r\n",
        b"SIP/x 200 OK\r\n\r\n",
        b"SIP/2.0\t486\tBusy Here\r\n\r\n",
        b"SIP/2.0 200 OK\nVia: a\nTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a\r\n  folded\r\n\tagain\r\nTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\r\n folded first\r\nVia: a\r\n\r\n",
        b"SIP/2.0 200 OK\r\nno colon\r\n folded after it\r\nVia: a\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a\r\nno colon\r\n folded after it\r\n\r\n",
        b"SIP/2.0 200 OK\r\n: empty name\r\n  :  \r\nVia:\r\n\r\n",
        b"SIP/2.0 200 OK\r\n Via : spaced\r\nVia : spaced\r\n\r\n",
        b"SIP/2.0 200 OK\r\nI: c\r\nL: 3\r\nF: f\r\nT: t\r\nV: v\r\nM: m\r\nO: o\r\nK: k\r\nE: e\r\nC: c\r\nS: s\r\nR: r\r\nB: b\r\nX: x\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\ncall-ID: c\r\nCSEQ: 1 BYE\r\nCONTENT-LENGTH: 2\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nContent-Length: 2\r\nl: 4\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n 1\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\nabc",
        b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"SIP/2.0 200 OK\r\nContent-Length: 3\r\n\r\n",
        b"SIP/2.0 200 OK\r\nContent-Length:  +3 \r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nContent-Length\t:\t3\r\n\r\nabcdef",
        b"SIP/2.0 200 OK\r\nVia: a\r\n\nTo: after an empty line\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a\r\r\nTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a\rTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: \xff\xfe\r\nTo: after bad bytes\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\xc3\x28: x\r\nTo: b\r\n\r\n",
        b"\xff\xfe 200 OK\r\nTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\xff\r\nTo: b\r\n\r\n",
        b"SIP/2.0 200 OK\nTo: \xff\r\n\r\n",
        "SIP/2.0 200 OK\r\nSubject:\u{a0}nbsp\u{3000}\r\n\u{2003}To: em space\r\n\r\n".as_bytes(),
        "SIP/2.0 200 OK\r\n\u{a0}folded by nbsp\r\nTo:\u{85}b\u{85}\r\n\r\n".as_bytes(),
        "SIP/2.0 200 OK\r\nVía: not via\r\nCall-İD: x\r\n\r\n".as_bytes(),
        b"SIP/2.0 200 OK\r\nP-Preferred-Identity: 20\r\nP-Preferred-Identityx: 21\r\nAuthentication-Info-Extra-Long-Name: x\r\n\r\n",
        b"SIP/2.0 200 OK\r\nX-Scacheck: teardown\r\nx-scacheck: together\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: a: b: c\r\nTo:b;tag=1\r\n\r\n",
    ];

    #[test]
    fn the_index_reads_hostile_bytes_as_rsipstack_does() {
        for raw in HOSTILE {
            same_as_rsipstack(raw);
        }
        // Folded past 4 KiB, and a long header section.
        let mut long = b"SIP/2.0 200 OK\r\nVia: a".to_vec();
        for _ in 0..600 {
            long.extend_from_slice(b"\r\n folded ");
        }
        long.extend_from_slice(b"\r\n\r\n");
        same_as_rsipstack(&long);
    }

    #[test]
    fn known_names_are_rsipstacks() {
        use rsipstack::sip::headers::make_header;
        let mut names: Vec<String> = Vec::new();
        let chars: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain("0123456789-_. ".chars())
            .collect();
        for a in &chars {
            names.push(a.to_string());
            for b in &chars {
                names.push(format!("{a}{b}"));
            }
        }
        // Every name make_header knows, as written, and in other cases.
        let known = [
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Alert-Info",
            "Allow",
            "Authentication-Info",
            "Authorization",
            "CSeq",
            "Call-ID",
            "Call-Info",
            "Contact",
            "Content-Disposition",
            "Content-Encoding",
            "Content-Language",
            "Content-Length",
            "Content-Type",
            "Date",
            "Error-Info",
            "Event",
            "Expires",
            "From",
            "In-Reply-To",
            "Max-Forwards",
            "Mime-Version",
            "Min-Expires",
            "Organization",
            "Priority",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "Proxy-Require",
            "Record-Route",
            "Reply-To",
            "Require",
            "Retry-After",
            "Route",
            "Service-Route",
            "Server",
            "Subject",
            "Subscription-State",
            "Supported",
            "Timestamp",
            "To",
            "Unsupported",
            "User-Agent",
            "Via",
            "Warning",
            "WWW-Authenticate",
            "Reason",
            "Refer-To",
            "Referred-By",
            "Session-Expires",
            "Min-SE",
            "P-Asserted-Identity",
            "P-Preferred-Identity",
            "Replaces",
            "RSeq",
            "RAck",
            "Privacy",
            "Path",
            "Identity",
            "User-to-User",
            "Session-ID",
            "History-Info",
            "Diversion",
            "X-Scacheck",
            "Call-ID-",
            "Via ",
            "Tos",
        ];
        for n in known {
            names.push(n.to_string());
            names.push(n.to_lowercase());
            names.push(n.to_uppercase());
        }
        for n in &names {
            let theirs = make_header(n, String::new());
            assert_eq!(known_name(n).unwrap_or(n), theirs.name(), "{n:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Messages made of the pieces that matter to a parser, in any order.
        #[test]
        fn the_index_reads_any_pieces_as_rsipstack_does(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 ", "NOTIFY ",
                "sip:x@y", " SIP/2.0", "Via", "v", "Content-Length", "l", "L", "Call-ID",
                "i", "X-Other", "To", ":", ": ", " ", "\t", "\r\n", "\n", "\r",
                "\r\n\r\n", "\r\n ", "3", "0", "99999999999999999999", "abc", ";tag=1",
                "\u{a0}", "é", "\u{3000}", "\u{85}",
            ]), 0..40),
            bad in proptest::option::of(0usize..200),
        ) {
            let mut raw = pieces.concat().into_bytes();
            if let Some(at) = bad {
                let at = at.min(raw.len());
                raw.insert(at, 0xff);
            }
            same_as_rsipstack(&raw);
        }

        /// A captured message with bytes changed, cut or added anywhere.
        #[test]
        fn the_index_reads_spoiled_messages_as_rsipstack_does(
            which in 0usize..100_000,
            edits in proptest::collection::vec((0usize..4096, proptest::sample::select(vec![
                b'\r', b'\n', b' ', b'\t', b':', b'\xff', b'\xc3', b'a', b'0',
            ]), 0u8..3), 1..6),
        ) {
            let all = FIXTURES.get_or_init(fixture_messages);
            let mut raw = all[which % all.len()].clone();
            for (at, byte, how) in edits {
                let at = at % (raw.len() + 1);
                match how {
                    0 => raw.insert(at, byte),
                    1 if at < raw.len() => { raw.remove(at); }
                    _ if at < raw.len() => raw[at] = byte,
                    _ => raw.push(byte),
                }
            }
            same_as_rsipstack(&raw);
        }
    }

    static FIXTURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
}
