//! SIP: the codec adapter, our small typed header layer, message builders,
//! stream framing (pure), the records of what crossed the wire (pure), and
//! the socket edge.

pub mod auth;
pub mod build;
pub mod codec;
pub mod dialog;
pub mod framing;
pub mod headers;
pub mod loss;
pub mod proxy;
pub mod record;
pub mod retransmit;
pub mod sdp;
pub mod tls;
pub mod transport;

pub use codec::{Message, ParseError};

use std::fmt;

/// The transports scacheck drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS over TCP (RFC 3261 26.2): framed as TCP, encrypted.
    Tls,
}

impl Transport {
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }

    /// Whether messages go over a connection (TCP, or TLS over TCP),
    /// framed by Content-Length, rather than as datagrams.
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// Where the first CRLF CRLF (the end of a header section) is in `bytes`.
pub fn find_crlf_crlf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\r', bytes).find(|&i| bytes[i..].starts_with(b"\r\n\r\n"))
}

/// Where the first CRLF is in `bytes`.
pub fn find_crlf(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\r', bytes).find(|&i| bytes.get(i + 1) == Some(&b'\n'))
}

/// The characters of `s` that are not inside a quoted string (nor its
/// quotes and escapes) and are ASCII: the ones that give a header value
/// its structure. Read byte by byte: a character past ASCII is all bytes
/// of 0x80 and up, none of them a quote, a backslash or a separator, so
/// the positions are those of the characters.
fn structural(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    s.bytes().enumerate().filter_map(move |(i, b)| {
        if escaped {
            // An escaped character past ASCII: its other bytes are quoted.
            escaped = false;
            return None;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if !quoted && b.is_ascii() => return Some((i, b as char)),
            _ => {}
        }
        None
    })
}

/// Splits `s` at `sep` (ASCII) where it is not inside a quoted string or
/// `<...>`.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    debug_assert!(sep.is_ascii());
    let mut out = Vec::new();
    let (mut angle, mut start) = (0u32, 0);
    for (i, c) in structural(s) {
        match c {
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            c if c == sep && angle == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Splits a header value holding a comma-separated list (Via, Contact,
/// Call-Info) into its elements.
pub fn split_list(value: &str) -> Vec<String> {
    split_top(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Removes one level of quoting (`"..."` with backslash escapes).
pub fn unquote(s: &str) -> String {
    let s = s.trim();
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The content of a quoted-string (RFC 3261 25.1: `"..."`, backslash
/// escapes), or None when `s` is not exactly one: unquoted, unterminated,
/// or with text after its closing quote.
pub fn quoted_string(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.next().is_none().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// Quotes a string for use as a quoted-string parameter value.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `;name=value` parameters of one list element, after its first part
/// (the URI or the Via sent-by). Names are lower-cased; values unquoted.
pub fn params(element: &str) -> Vec<(String, Option<String>)> {
    raw_params(element)
        .into_iter()
        .map(|(k, v)| (k, v.map(unquote)))
        .collect()
}

/// The same, with each value as written (quotes and escapes kept), for a
/// reader that must tell a quoted-string from a token.
pub fn raw_params(element: &str) -> Vec<(String, Option<&str>)> {
    // Parameters follow the closing '>' of a name-addr, or the first ';' of
    // an addr-spec or a Via value.
    let (tail, skip) = match angle_span(element) {
        Some((_, close)) => (&element[close + 1..], 0),
        None => (element, 1),
    };
    split_top(tail, ';')
        .into_iter()
        .skip(skip)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// The byte positions of the top-level `<` and `>` of a name-addr, ignoring
/// brackets inside quoted strings (a display name or a quoted parameter).
fn angle_span(s: &str) -> Option<(usize, usize)> {
    let mut open = None;
    for (i, c) in structural(s) {
        match c {
            '<' if open.is_none() => open = Some(i),
            '>' => return open.map(|o| (o, i)),
            _ => {}
        }
    }
    None
}

/// A name-addr or addr-spec (From, To, Contact, Call-Info elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let (display, uri) = match angle_span(s) {
            Some((open, close)) => {
                let d = unquote(&s[..open]);
                (
                    (!d.is_empty()).then_some(d),
                    s[open + 1..close].trim().to_string(),
                )
            }
            None if s.contains('<') => return None,
            None => (None, split_top(s, ';')[0].trim().to_string()),
        };
        if uri.is_empty() {
            return None;
        }
        Some(NameAddr {
            display,
            uri,
            params: params(s),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// The user part of the URI (`60970` in `sip:60970@host`).
    pub fn user(&self) -> Option<&str> {
        uri_user(&self.uri)
    }
}

/// The user part of a SIP URI.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The IP address and port a SIP URI names (`sip:user@127.0.0.1:5070;
/// transport=tcp` -> 127.0.0.1:5070, `[::1]:5070` too); None for a host
/// name or a URI with no port.
pub fn uri_addr(uri: &str) -> Option<std::net::SocketAddr> {
    let rest = uri.split_once(':')?.1;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split([';', '?']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_names_an_address_only_by_ip_and_port() {
        let at = |u| uri_addr(u).map(|a| a.to_string());
        assert_eq!(
            at("sip:60970@127.0.0.1:5070;transport=tcp").as_deref(),
            Some("127.0.0.1:5070")
        );
        assert_eq!(at("sips:a@[::1]:5061").as_deref(), Some("[::1]:5061"));
        assert_eq!(
            at("sip:127.0.0.1:5060?x=y").as_deref(),
            Some("127.0.0.1:5060")
        );
        assert_eq!(at("sip:a@phone.test:5060"), None);
        assert_eq!(at("sip:a@127.0.0.1"), None);
    }

    #[test]
    fn splits_lists_around_quotes_and_brackets() {
        let v = r#"<sip:a.test>;appearance-index=1;appearance-uri="\"A, B\" <sip:1@a.test>", <sip:a.test>;appearance-index=*;appearance-state=idle"#;
        let l = split_list(v);
        assert_eq!(l.len(), 2);
        assert_eq!(
            params(&l[0]),
            vec![
                ("appearance-index".into(), Some("1".into())),
                (
                    "appearance-uri".into(),
                    Some(r#""A, B" <sip:1@a.test>"#.into())
                ),
            ]
        );
    }

    #[test]
    fn reads_name_addr_and_addr_spec() {
        let a =
            NameAddr::parse(r#""Line \"1\"" <sip:60970@sca.test;transport=tcp>;tag=x9"#).unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"Line "1""#));
        assert_eq!(a.uri, "sip:60970@sca.test;transport=tcp");
        assert_eq!(a.param("tag"), Some("x9"));
        assert_eq!(a.user(), Some("60970"));
        let b = NameAddr::parse("sip:60972@h;tag=7").unwrap();
        assert_eq!((b.uri.as_str(), b.param("tag")), ("sip:60972@h", Some("7")));
        assert!(NameAddr::parse("<sip:broken").is_none());
        assert!(NameAddr::parse("").is_none());
    }

    #[test]
    fn via_params_skip_the_sent_by() {
        let p = params("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport");
        assert_eq!(
            p,
            vec![
                ("branch".into(), Some("z9hG4bKx".into())),
                ("rport".into(), None)
            ]
        );
    }

    #[test]
    fn quote_round_trips() {
        let s = r#""Bob" <sip:1@h>"#;
        assert_eq!(unquote(&quote(s)), s);
        assert_eq!(quoted_string(&quote(s)).as_deref(), Some(s));
    }

    #[test]
    fn a_quoted_string_is_quoted_and_ends_where_it_closes() {
        assert_eq!(quoted_string(r#" "a \"b\"" "#).as_deref(), Some(r#"a "b""#));
        assert_eq!(quoted_string(r#""""#).as_deref(), Some(""));
        for not in [
            "",
            "plain",
            r#""unterminated"#,
            r#""a\""#,
            r#""a" b"#,
            r#""a"""#,
        ] {
            assert_eq!(quoted_string(not), None, "{not}");
        }
    }
}

#[cfg(test)]
mod bracket_tests {
    use super::*;

    #[test]
    fn brackets_inside_quotes_do_not_end_the_uri() {
        let a = NameAddr::parse(r#""a <b>" <sip:1@h>;appearance-uri="<sip:2@h>";x"#).unwrap();
        assert_eq!(a.display.as_deref(), Some("a <b>"));
        assert_eq!(a.uri, "sip:1@h");
        assert_eq!(a.param("appearance-uri"), Some("<sip:2@h>"));
    }
}
