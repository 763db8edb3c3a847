//! What an SDP offer says about hold, in the forms phones use: one reading
//! for the embedded server, the derivers and the recovery of a capture's
//! actions, and the offers scacheck's phones send for each form.

use std::net::IpAddr;

/// How a phone puts a call on hold (a case step's `style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HoldStyle {
    /// A re-INVITE offering `a=sendonly` (RFC 3264 8.4).
    #[default]
    SendOnly,
    /// A re-INVITE offering `a=inactive`.
    Inactive,
    /// A re-INVITE whose connection address is 0.0.0.0 and that has no
    /// direction attribute: RFC 2543's hold, still some phones' default.
    Rfc2543,
    /// An UPDATE (RFC 3311) offering `a=sendonly`.
    Update,
}

impl HoldStyle {
    pub const ALL: &'static [HoldStyle] = &[
        HoldStyle::SendOnly,
        HoldStyle::Inactive,
        HoldStyle::Rfc2543,
        HoldStyle::Update,
    ];

    /// As a case file names it.
    pub fn name(self) -> &'static str {
        match self {
            HoldStyle::SendOnly => "sendonly",
            HoldStyle::Inactive => "inactive",
            HoldStyle::Rfc2543 => "rfc2543",
            HoldStyle::Update => "update",
        }
    }

    pub fn parse(name: &str) -> Option<HoldStyle> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// The in-dialog request that carries it.
    pub fn method(self) -> &'static str {
        match self {
            HoldStyle::Update => "UPDATE",
            _ => "INVITE",
        }
    }

    /// The offer a phone at `ip` (media on `port`) sends to hold this way.
    pub fn offer(self, user: &str, ip: IpAddr, port: u16) -> Vec<u8> {
        match self {
            HoldStyle::SendOnly | HoldStyle::Update => {
                super::build::sdp(user, ip, port, "sendonly")
            }
            HoldStyle::Inactive => super::build::sdp(user, ip, port, "inactive"),
            HoldStyle::Rfc2543 => format!(
                "v=0\r\no={user} 1 2 IN IP4 {ip}\r\ns=scacheck\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
                 m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
            .into_bytes(),
        }
    }

    /// The hold an in-dialog request of `method` with `body` makes; None
    /// when it is no hold (a resume, or no offer).
    pub fn of(method: &str, body: &[u8]) -> Option<HoldStyle> {
        let lines = || {
            std::str::from_utf8(body)
                .unwrap_or_default()
                .lines()
                .map(str::trim)
        };
        let has = |attr: &str| lines().any(|l| l.eq_ignore_ascii_case(attr));
        let style = if has("a=inactive") {
            HoldStyle::Inactive
        } else if has("a=sendonly") {
            HoldStyle::SendOnly
        } else if has("c=IN IP4 0.0.0.0") {
            HoldStyle::Rfc2543
        } else {
            return None;
        };
        match (method, style) {
            ("UPDATE", HoldStyle::SendOnly) => Some(HoldStyle::Update),
            // An UPDATE that holds another way is still a hold.
            ("INVITE" | "UPDATE", style) => Some(style),
            _ => None,
        }
    }
}

/// Whether an offer puts the call on hold, in any of the forms; None when
/// there is no offer.
pub fn holds(body: &[u8]) -> Option<bool> {
    if String::from_utf8_lossy(body).trim().is_empty() {
        return None;
    }
    Some(HoldStyle::of("INVITE", body).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each style's offer reads back as that style, and a plain offer as
    /// no hold.
    #[test]
    fn each_hold_offer_reads_as_its_own_style() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for &style in HoldStyle::ALL {
            let offer = style.offer("u", ip, 4000);
            assert_eq!(
                HoldStyle::of(style.method(), &offer),
                Some(style),
                "{style:?}"
            );
            assert_eq!(holds(&offer), Some(true));
            assert_eq!(HoldStyle::parse(style.name()), Some(style));
        }
        let plain = super::super::build::sdp("u", ip, 4000, "sendrecv");
        assert_eq!(HoldStyle::of("INVITE", &plain), None);
        assert_eq!(holds(&plain), Some(false));
        assert_eq!(holds(b""), None);
        // RFC 2543's offer has no direction attribute: not a sendonly.
        let rfc = String::from_utf8(HoldStyle::Rfc2543.offer("u", ip, 4000)).unwrap();
        assert!(!rfc.contains("a=send") && rfc.contains("c=IN IP4 0.0.0.0"));
    }
}
