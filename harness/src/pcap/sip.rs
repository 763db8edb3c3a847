//! Is this SIP? Decided by the first line (a request line ending in
//! `SIP/2.0`, or a status line starting with it), never by port.

/// Longest first line we wait for before calling the bytes not SIP.
pub(crate) const MAX_START_LINE: usize = 8 * 1024;

const VERSION: &[u8] = b"SIP/2.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The bytes begin with a SIP request or status line.
    Yes,
    /// They do not.
    No,
    /// The first line is not complete yet and could still become one.
    NeedMore,
}

/// Classifies the first line of `bytes` (leading CR/LF keep-alives
/// skipped). `complete` says no more bytes will follow (a datagram, a framed
/// message): an unterminated line is then judged as it stands.
pub(crate) fn start_line(bytes: &[u8], complete: bool) -> Start {
    let skip = bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let bytes = &bytes[skip..];
    let (line, whole) = match bytes.iter().position(|b| *b == b'\n') {
        Some(end) => (&bytes[..end], true),
        None => (bytes, complete),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_START_LINE {
        return Start::No;
    }
    if whole {
        if is_start_line(line) {
            Start::Yes
        } else {
            Start::No
        }
    } else if could_start(line) {
        Start::NeedMore
    } else {
        Start::No
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// A whole first line, without its CRLF.
fn is_start_line(line: &[u8]) -> bool {
    if starts_with_ci(line, b"SIP/2.0 ") {
        let code = &line[VERSION.len() + 1..];
        return code.len() >= 3
            && code[..3].iter().all(u8::is_ascii_digit)
            && code.get(3).is_none_or(|b| *b == b' ')
            && code.iter().all(|b| *b == b'\t' || !b.is_ascii_control());
    }
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|b| is_token(*b))
        && !uri.is_empty()
        && uri.iter().all(u8::is_ascii_graphic)
        && version.eq_ignore_ascii_case(VERSION)
}

/// Whether an unterminated first line is a prefix of one that would be.
fn could_start(line: &[u8]) -> bool {
    if line.is_empty() {
        return true;
    }
    let status = b"SIP/2.0 ";
    if line.len() < status.len() && starts_with_ci(status, line) {
        return true;
    }
    if starts_with_ci(line, status) {
        let code = &line[status.len()..];
        let digits = code.len().min(3);
        return code[..digits].iter().all(u8::is_ascii_digit)
            && code.get(3).is_none_or(|b| *b == b' ')
            && code.iter().all(|b| *b == b'\t' || !b.is_ascii_control());
    }
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.is_empty() || !method.iter().all(|b| is_token(*b)) {
        return false;
    }
    let Some(uri) = parts.next() else {
        return true;
    };
    if !uri.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    let Some(version) = parts.next() else {
        return !uri.is_empty() || line.ends_with(b" ");
    };
    !uri.is_empty()
        && parts.next().is_none()
        && version.len() <= VERSION.len()
        && starts_with_ci(VERSION, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_sip() {
        for line in [
            &b"INVITE sip:bob@example.com SIP/2.0\r\nVia: x\r\n\r\n"[..],
            b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\n",
            b"SIP/2.0 200 OK\r\n",
            b"SIP/2.0 180\r\n",
            b"sip/2.0 486 Busy Here\n",
            b"X-CUSTOM tel:+1 sip/2.0\r\n",
        ] {
            assert_eq!(start_line(line, true), Start::Yes, "{line:?}");
        }
        assert_eq!(start_line(b"SIP/2.0 200 OK", true), Start::Yes);
    }

    #[test]
    fn other_protocols_are_not() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"HTTP/1.1 200 OK\r\n",
            b"\x16\x03\x01\x02\x00",
            b"INVITE  sip:a SIP/2.0\r\n",
            b"INVITE sip:a SIP/2.0 \r\n",
            b"SIP/2.0 20 OK\r\n",
            b"SIP/2.0 2000 OK\r\n",
            b"",
            b"\r\n",
        ] {
            assert_eq!(start_line(line, true), Start::No, "{line:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_start_line_waits_for_more() {
        for line in [
            &b"INVITE sip:bob@example.com SIP/2.0\r\n"[..],
            b"SIP/2.0 200 OK\r\n",
        ] {
            for cut in 0..line.len() - 1 {
                assert_eq!(
                    start_line(&line[..cut], false),
                    Start::NeedMore,
                    "{:?}",
                    String::from_utf8_lossy(&line[..cut])
                );
            }
            assert_eq!(start_line(line, false), Start::Yes);
        }
        assert_eq!(start_line(b"GET / HTTP/1.", false), Start::No);
        assert_eq!(start_line(b"\x16\x03", false), Start::No);
    }
}
