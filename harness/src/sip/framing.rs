//! Cutting a byte stream (TCP) into SIP messages by Content-Length. Pure, so
//! the live transport and pcap reassembly share it; the codec reads a
//! datagram's Content-Length by the same rule, so that a length is refused
//! alike whichever transport carried it, live or captured.

/// Largest header section we accept before calling the stream broken.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest body we accept: SCA messages are small; a gigabyte
/// Content-Length is a broken or hostile peer, not a message to wait for.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header section exceeds {MAX_HEADER_BYTES} bytes without CRLF CRLF")]
    HeaderTooLarge,
    #[error("Content-Length {0} exceeds the {MAX_BODY_BYTES}-byte limit")]
    BodyTooLarge(u64),
    #[error("unreadable Content-Length {0:?}")]
    BadContentLength(String),
}

/// Accumulates stream bytes and yields whole messages. After an error the
/// stream cannot be re-synchronised: the caller should drop the connection.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

impl StreamFramer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes the bytes held (for a report, after an error).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The next whole message, if the buffer holds one.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, FramingError>> {
        // RFC 5626 keep-alives (CRLF) between messages are not messages.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.buf.drain(..skip);
        let Some(head_len) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (self.buf.len() > MAX_HEADER_BYTES)
                .then_some(Err(FramingError::HeaderTooLarge));
        };
        if head_len > MAX_HEADER_BYTES {
            return Some(Err(FramingError::HeaderTooLarge));
        }
        let body_len = match content_length(&self.buf[..head_len]) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let total = head_len + 4 + body_len;
        if self.buf.len() < total {
            return None;
        }
        let rest = self.buf.split_off(total);
        Some(Ok(std::mem::replace(&mut self.buf, rest)))
    }
}

/// The Content-Length of a header section (long or compact form); a stream
/// message without one has no body (RFC 3261 requires it on streams). A
/// value that is not a number, or too large for one (twenty digits), is
/// unreadable; one past [`MAX_BODY_BYTES`] is refused.
pub(crate) fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut from = 0;
    let lines = std::iter::from_fn(|| {
        // As `head.split(|b| *b == b'\n')`.
        let rest = head.get(from..)?;
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        from += end + 1;
        Some(&rest[..end])
    });
    for line in lines {
        // A folded continuation of another header is no header of its own,
        // whatever it holds.
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        // Most lines are some other header, told by their ASCII name alone
        // (a pcap check reads a million messages); a name that is not ASCII
        // is read as text, as any other line.
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if line[..colon].is_ascii() {
            let name = line[..colon].trim_ascii();
            if !name.eq_ignore_ascii_case(b"content-length") && !name.eq_ignore_ascii_case(b"l") {
                continue;
            }
        }
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            let n: u64 = value
                .parse()
                .map_err(|_| FramingError::BadContentLength(value.to_string()))?;
            if n > MAX_BODY_BYTES as u64 {
                return Err(FramingError::BodyTooLarge(n));
            }
            return Ok(n as usize);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";
    const B: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn cuts_messages_at_any_split_point() {
        let stream: Vec<u8> = [b"\r\n\r\n".as_slice(), A, B].concat();
        for cut in 0..stream.len() {
            let mut f = StreamFramer::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part);
                while let Some(m) = f.next_message() {
                    got.push(m.unwrap());
                }
            }
            assert_eq!(got, vec![A.to_vec(), B.to_vec()], "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn a_folded_line_is_not_a_content_length() {
        let head = b"MESSAGE sip:a@b SIP/2.0\r\nSubject: x\r\n l: 99\r\nl: 3";
        assert_eq!(content_length(head), Ok(3));
    }

    #[test]
    fn refuses_huge_or_garbled_lengths() {
        let mut f = StreamFramer::default();
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1073741824\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Some(Err(FramingError::BodyTooLarge(1 << 30)))
        );
        let mut f = StreamFramer::default();
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Some(Err(FramingError::BadContentLength(_)))
        ));
        let mut f = StreamFramer::default();
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n");
        assert_eq!(
            f.next_message(),
            Some(Err(FramingError::BadContentLength(
                "99999999999999999999".into()
            ))),
            "a number too large to hold is unreadable, not ignored"
        );
        let mut f = StreamFramer::default();
        f.push(&vec![b'x'; MAX_HEADER_BYTES + 1]);
        assert_eq!(f.next_message(), Some(Err(FramingError::HeaderTooLarge)));
    }
}
