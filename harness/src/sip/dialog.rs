//! One side's view of a SIP dialog: what it takes to build requests inside
//! it. The user agents and the embedded server share it.

use super::build::Builder;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    /// Our From (UAC) or To (UAS) value without its tag: `<sip:60970@sca.test>`.
    pub local: String,
    pub local_tag: String,
    /// The peer's, without its tag.
    pub remote: String,
    pub remote_tag: Option<String>,
    /// Where in-dialog requests are addressed (the peer's Contact).
    pub remote_target: String,
    /// Route headers for requests in the dialog (from Record-Route: as
    /// received at the UAS, reversed at the UAC). Empty without proxies.
    pub route: Vec<String>,
    pub next_cseq: u32,
}

impl Dialog {
    /// A request in this dialog; takes the next CSeq number, returned too.
    pub fn request(&mut self, method: &str, via: &str) -> (Builder, u32) {
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        (
            self.with_headers(
                Builder::request(method, &self.remote_target),
                method,
                cseq,
                via,
            ),
            cseq,
        )
    }

    /// The route set of a dialog from a message's Record-Route headers: in
    /// order for the UAS (from the request), reversed for the UAC (from the
    /// response), RFC 3261 12.1.
    pub fn route_set(msg: &super::Message, uac: bool) -> Vec<String> {
        let mut set: Vec<String> = msg
            .headers("Record-Route")
            .flat_map(super::split_list)
            .collect();
        if uac {
            set.reverse();
        }
        set
    }

    /// The ACK of a 2xx to the INVITE (or re-INVITE) with CSeq `cseq`.
    pub fn ack(&self, cseq: u32, via: &str) -> Builder {
        self.with_headers(
            Builder::request("ACK", &self.remote_target),
            "ACK",
            cseq,
            via,
        )
    }

    fn with_headers(&self, b: Builder, method: &str, cseq: u32, via: &str) -> Builder {
        let to = match &self.remote_tag {
            Some(t) => format!("{};tag={t}", self.remote),
            None => self.remote.clone(),
        };
        let b = self
            .route
            .iter()
            .fold(b.header("Via", via), |b, r| b.header("Route", r));
        b.header("From", &format!("{};tag={}", self.local, self.local_tag))
            .header("To", &to)
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{cseq} {method}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    #[test]
    fn requests_carry_the_dialog_and_count_cseq() {
        let mut d = Dialog {
            call_id: "c".into(),
            local: "<sip:a@h>".into(),
            local_tag: "1".into(),
            remote: "<sip:b@h>".into(),
            remote_tag: Some("2".into()),
            remote_target: "sip:b@127.0.0.1:5070".into(),
            route: vec!["<sip:proxy1;lr>".into(), "<sip:proxy2;lr>".into()],
            next_cseq: 5,
        };
        let (bye, n) = d.request("BYE", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx");
        let bye = Message::parse(bye.build()).unwrap();
        assert_eq!((n, d.next_cseq), (5, 6));
        assert_eq!(bye.request_uri(), Some("sip:b@127.0.0.1:5070"));
        assert_eq!(
            (bye.from_tag().as_deref(), bye.to_tag().as_deref()),
            (Some("1"), Some("2"))
        );
        let ack = Message::parse(d.ack(3, "SIP/2.0/UDP h;branch=z9hG4bKy").build()).unwrap();
        assert_eq!(ack.cseq(), Some((3, "ACK")));
        assert_eq!(d.next_cseq, 6, "ACK takes no CSeq number");
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use crate::sip::Message;

    #[test]
    fn route_set_is_reversed_for_the_uac() {
        let m = Message::parse(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRecord-Route: <sip:p2;lr>, <sip:p1;lr>\r\nRecord-Route: <sip:p0;lr>\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
        )
        .unwrap();
        assert_eq!(
            Dialog::route_set(&m, false),
            ["<sip:p2;lr>", "<sip:p1;lr>", "<sip:p0;lr>"]
        );
        assert_eq!(
            Dialog::route_set(&m, true),
            ["<sip:p0;lr>", "<sip:p1;lr>", "<sip:p2;lr>"]
        );
    }
}
