//! Message builders. Everything scacheck sends is built here, as bytes; the
//! edge parses those bytes back so that what is recorded is what was sent.

use super::Message;

/// A SIP message under construction.
#[derive(Debug, Clone)]
pub struct Builder {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Builder {
    pub fn request(method: &str, uri: &str) -> Builder {
        Builder {
            start: format!("{method} {uri} SIP/2.0"),
            headers: vec![("Max-Forwards".into(), "70".into())],
            body: Vec::new(),
        }
    }

    /// A response to `req`: Via, Record-Route, From, To, Call-ID and CSeq
    /// copied (RFC 3261 8.2.6.2, 12.1.1), with `to_tag` added to To when it
    /// has none.
    pub fn response_to(req: &Message, code: u16, to_tag: Option<&str>) -> Builder {
        let mut b = Builder {
            start: format!("SIP/2.0 {code} {}", reason_phrase(code)),
            headers: Vec::new(),
            body: Vec::new(),
        };
        for via in req.headers("Via") {
            b = b.header("Via", via);
        }
        // The UAS copies Record-Route into its responses so that the UAC
        // learns the route set too (RFC 3261 12.1.1).
        for rr in req.headers("Record-Route") {
            b = b.header("Record-Route", rr);
        }
        let to = req.header("To").unwrap_or_default();
        let to = match to_tag {
            Some(tag) if req.to_tag().is_none() => format!("{to};tag={tag}"),
            _ => to.to_string(),
        };
        b.header("From", req.header("From").unwrap_or_default())
            .header("To", &to)
            .header("Call-ID", req.call_id())
            .header("CSeq", req.header("CSeq").unwrap_or_default())
    }

    pub fn header(mut self, name: &str, value: &str) -> Builder {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Builder {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = body.to_vec();
        self
    }

    pub fn build(self) -> Vec<u8> {
        let mut out = String::with_capacity(512);
        out.push_str(&self.start);
        out.push_str("\r\n");
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A minimal audio SDP offer/answer; `direction` is `sendrecv`, `sendonly`...
pub fn sdp(user: &str, ip: std::net::IpAddr, port: u16, direction: &str) -> Vec<u8> {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=scacheck\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )
    .into_bytes()
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        486 => "Busy Here",
        487 => "Request Terminated",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_parse_back() {
        let req = Builder::request("INVITE", "sip:60970@sca.test")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1")
            .header("From", "<sip:60972@sca.test>;tag=a")
            .header("To", "<sip:60970@sca.test>")
            .header("Call-ID", "c1")
            .header("CSeq", "1 INVITE")
            .body(
                "application/sdp",
                &sdp("60972", [127, 0, 0, 1].into(), 4000, "sendrecv"),
            )
            .build();
        let req = Message::parse(req).unwrap();
        assert_eq!(req.request_uri(), Some("sip:60970@sca.test"));
        let resp = Message::parse(Builder::response_to(&req, 180, Some("t1")).build()).unwrap();
        assert_eq!(resp.status(), Some(180));
        assert_eq!(resp.to_tag().as_deref(), Some("t1"));
        assert_eq!(resp.via_branch().as_deref(), Some("z9hG4bK1"));
        assert_eq!(resp.cseq(), Some((1, "INVITE")));
    }
}
