//! Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760),
//! sans-IO and on `digest_auth`'s arithmetic. Both halves live here so that
//! the phones and the embedded server can only agree on one reading:
//!
//! - [`Keyring`]: a phone's side. It keeps the challenges a server sent
//!   (one per kind and realm, the strongest algorithm offered), answers
//!   every later request to that server with them (the nonce reused, its
//!   count incremented), and says when a challenge cannot be answered.
//! - [`Challenger`]: the embedded server's side. It challenges a request
//!   without valid credentials, retires each nonce after a few uses (so
//!   that `stale=true` is exercised by every authenticated run), and
//!   refuses replayed nonce counts.
//! - [`resend`]: a request scacheck built, sent again in a new transaction
//!   with credentials (new branch and CSeq).
//!
//! A password is a [`Secret`]: it has no `Display`, its `Debug` is
//! redacted, and it is only ever read by the digest computation.

use std::collections::VecDeque;

use digest_auth::{AuthContext, AuthorizationHeader, HttpMethod, WwwAuthenticateHeader};

use super::Message;

/// A password. Never printed: `Debug` says `<redacted>`, there is no
/// `Display`, and reports only ever name where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The password itself, for the digest computation only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a phone answers challenges with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The digest user name (often the SIP user).
    pub user: String,
    pub password: Secret,
}

/// A digest algorithm scacheck answers and challenges with, strongest
/// last (RFC 8760: a client takes the strongest it supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn of(a: digest_auth::Algorithm) -> Option<Algorithm> {
        use digest_auth::AlgorithmType as T;
        match (a.algo, a.sess) {
            (T::MD5, false) => Some(Algorithm::Md5),
            (T::SHA2_256, false) => Some(Algorithm::Sha256),
            _ => None,
        }
    }
}

/// Which pair of headers a challenge uses: a registrar or UAS answers 401
/// with WWW-Authenticate, a proxy 407 with Proxy-Authenticate (RFC 3261
/// 22.2, 22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Www,
    Proxy,
}

impl Kind {
    /// The kind of a response status, if it is a challenge.
    pub fn of_status(status: u16) -> Option<Kind> {
        match status {
            401 => Some(Kind::Www),
            407 => Some(Kind::Proxy),
            _ => None,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Kind::Www => 401,
            Kind::Proxy => 407,
        }
    }

    pub fn challenge_header(self) -> &'static str {
        match self {
            Kind::Www => "WWW-Authenticate",
            Kind::Proxy => "Proxy-Authenticate",
        }
    }

    pub fn answer_header(self) -> &'static str {
        match self {
            Kind::Www => "Authorization",
            Kind::Proxy => "Proxy-Authorization",
        }
    }
}

/// What a phone learnt from one challenge response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenged {
    pub kind: Kind,
    pub realm: String,
    pub algorithm: Algorithm,
    /// The server says the credentials were right but the nonce is spent
    /// (RFC 7616 3.3): answer again with the new one.
    pub stale: bool,
}

/// A phone's digest state: the challenges it holds, one per kind and realm.
#[derive(Debug)]
pub struct Keyring {
    credentials: Credentials,
    held: Vec<(Kind, WwwAuthenticateHeader)>,
}

impl Keyring {
    pub fn new(credentials: Credentials) -> Keyring {
        Keyring {
            credentials,
            held: Vec::new(),
        }
    }

    pub fn user(&self) -> &str {
        &self.credentials.user
    }

    /// Takes the challenge of a 401 or 407: the strongest digest algorithm
    /// it offers replaces what was held for its kind and realm. An error
    /// says why it cannot be answered (no digest challenge, none in an
    /// algorithm we know, unreadable).
    pub fn challenged(&mut self, resp: &Message) -> Result<Challenged, String> {
        let status = resp.status().unwrap_or(0);
        let kind = Kind::of_status(status).ok_or_else(|| format!("{status} is no challenge"))?;
        let mut best: Option<(Algorithm, WwwAuthenticateHeader)> = None;
        let mut unreadable = Vec::new();
        for value in resp.headers(kind.challenge_header()) {
            if !value
                .trim_start()
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
            {
                unreadable.push(format!("not a digest challenge: {}", first_word(value)));
                continue;
            }
            match digest_auth::parse(value) {
                Ok(h) => match Algorithm::of(h.algorithm) {
                    Some(a) if best.as_ref().is_none_or(|(b, _)| a > *b) => best = Some((a, h)),
                    Some(_) => {}
                    None => unreadable.push(format!("algorithm {} not supported", h.algorithm)),
                },
                Err(e) => unreadable.push(e.to_string()),
            }
        }
        let Some((algorithm, header)) = best else {
            return Err(if unreadable.is_empty() {
                format!("{status} without a {} header", kind.challenge_header())
            } else {
                format!(
                    "{status} with no usable challenge ({})",
                    unreadable.join("; ")
                )
            });
        };
        let got = Challenged {
            kind,
            realm: header.realm.clone(),
            algorithm,
            stale: header.stale,
        };
        self.held
            .retain(|(k, h)| !(*k == kind && h.realm == header.realm));
        self.held.push((kind, header));
        Ok(got)
    }

    /// The credentials headers for a request (its method, Request-URI and
    /// body), one per challenge held; each use counts the nonce once more.
    pub fn authorize(&mut self, method: &str, uri: &str, body: &[u8]) -> Vec<(Kind, String)> {
        let creds = &self.credentials;
        self.held
            .iter_mut()
            .filter_map(|(kind, h)| {
                let context = AuthContext::new_with_method(
                    creds.user.as_str(),
                    creds.password.expose(),
                    uri,
                    Some(body),
                    HttpMethod::from(method.to_string()),
                );
                h.respond(&context).ok().map(|a| (*kind, a.to_string()))
            })
            .collect()
    }
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

/// `raw`, a request scacheck built, as it is sent: optionally in a new
/// transaction (top Via branch `branch`, CSeq number `cseq`), and with
/// `credentials` instead of any Authorization or Proxy-Authorization it
/// had. The body and every other header are kept byte for byte.
pub fn resend(
    raw: &[u8],
    new_transaction: Option<(&str, u32)>,
    credentials: &[(Kind, String)],
) -> Vec<u8> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let (head, body) = raw.split_at(split);
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let mut out = String::with_capacity(raw.len() + 256);
    out.push_str(lines.next().unwrap_or_default());
    out.push_str("\r\n");
    let mut via_done = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let name_is = |n: &str| name.trim().eq_ignore_ascii_case(n);
        if name_is("Authorization") || name_is("Proxy-Authorization") {
            continue;
        }
        match new_transaction {
            Some((branch, _)) if !via_done && (name_is("Via") || name_is("v")) => {
                via_done = true;
                out.push_str(name);
                out.push(':');
                out.push_str(&with_branch(value, branch));
            }
            Some((_, cseq)) if name_is("CSeq") => {
                let method = value.split_whitespace().nth(1).unwrap_or_default();
                out.push_str(&format!("{name}: {cseq} {method}"));
            }
            _ => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    for (kind, value) in credentials {
        out.push_str(&format!("{}: {value}\r\n", kind.answer_header()));
    }
    let mut bytes = out.into_bytes();
    // The head ended with the CRLF of its last header; `body` starts with
    // the blank line's CRLF CRLF.
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(body);
    bytes
}

/// A Via value (the first of a list) with its branch parameter replaced.
fn with_branch(value: &str, branch: &str) -> String {
    let (first, rest) = match value.find(',') {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let params: Vec<String> = first
        .split(';')
        .map(|p| {
            if p.trim().to_ascii_lowercase().starts_with("branch=") {
                format!("branch={branch}")
            } else {
                p.to_string()
            }
        })
        .collect();
    format!("{}{rest}", params.join(";"))
}

/// How the embedded server answers a request that needs credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Valid credentials (or none needed).
    Pass,
    /// Answer with `status` and these challenge headers (name, value).
    Challenge {
        status: u16,
        headers: Vec<(&'static str, String)>,
    },
}

/// The most nonces a challenger remembers; an older one is answered as
/// stale, which a correct phone survives.
const NONCES: usize = 256;

/// How many requests a nonce authorises before it is answered as stale.
pub const NONCE_USES: u32 = 4;

#[derive(Debug)]
struct Nonce {
    value: String,
    uses: u32,
    last_nc: u32,
}

/// The embedded server's digest checks: one realm, the algorithms it
/// offers (each as a header of its own, strongest first, RFC 8760 2.4),
/// and the password of every user it knows.
#[derive(Debug)]
pub struct Challenger {
    realm: String,
    algorithms: Vec<Algorithm>,
    passwords: Vec<(String, Secret)>,
    nonces: VecDeque<Nonce>,
    counter: u64,
    seed: String,
}

impl Challenger {
    pub fn new(
        realm: &str,
        algorithms: &[Algorithm],
        passwords: Vec<(String, Secret)>,
        seed: &str,
    ) -> Challenger {
        let mut algorithms = algorithms.to_vec();
        algorithms.sort();
        algorithms.dedup();
        algorithms.reverse();
        Challenger {
            realm: realm.to_string(),
            algorithms,
            passwords,
            nonces: VecDeque::new(),
            counter: 0,
            seed: seed.to_string(),
        }
    }

    /// Checks the credentials of `req` for `kind`; a request without them,
    /// with a wrong digest or an unknown user is challenged, one whose
    /// nonce is spent, unknown or replayed is challenged `stale=true`.
    pub fn check(&mut self, req: &Message, kind: Kind) -> Gate {
        let mut stale = false;
        for value in req.headers(kind.answer_header()) {
            match self.verify(req, value) {
                Some(true) => return Gate::Pass,
                Some(false) => stale = true,
                None => {}
            }
        }
        self.challenge(kind, stale)
    }

    /// Some(true): valid; Some(false): the right digest on a nonce we no
    /// longer take; None: wrong, foreign or unreadable.
    fn verify(&mut self, req: &Message, value: &str) -> Option<bool> {
        let answer = AuthorizationHeader::parse(value).ok()?;
        if answer.realm != self.realm || Some(answer.uri.as_str()) != req.request_uri() {
            return None;
        }
        Algorithm::of(answer.algorithm).filter(|a| self.algorithms.contains(a))?;
        let (_, password) = self.passwords.iter().find(|(u, _)| *u == answer.username)?;
        let method = req.method().unwrap_or_default();
        let mut expected = answer.clone();
        let context = AuthContext {
            cnonce: answer.cnonce.as_deref().map(Into::into),
            ..AuthContext::new_with_method(
                answer.username.as_str(),
                password.expose(),
                answer.uri.as_str(),
                Some(req.body()),
                HttpMethod::from(method),
            )
        };
        expected.digest(&context);
        if expected.response != answer.response {
            return None;
        }
        let Some(nonce) = self.nonces.iter_mut().find(|n| n.value == answer.nonce) else {
            return Some(false);
        };
        if nonce.uses >= NONCE_USES || (answer.qop.is_some() && answer.nc <= nonce.last_nc) {
            return Some(false);
        }
        nonce.uses += 1;
        nonce.last_nc = answer.nc;
        Some(true)
    }

    fn challenge(&mut self, kind: Kind, stale: bool) -> Gate {
        self.counter += 1;
        let value = format!("{}{:x}", self.seed, self.counter);
        if self.nonces.len() == NONCES {
            self.nonces.pop_front();
        }
        self.nonces.push_back(Nonce {
            value: value.clone(),
            uses: 0,
            last_nc: 0,
        });
        let headers = self
            .algorithms
            .iter()
            .map(|a| {
                let mut h = format!(
                    "Digest realm=\"{}\", nonce=\"{value}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    a.name()
                );
                if stale {
                    h.push_str(", stale=true");
                }
                (kind.challenge_header(), h)
            })
            .collect();
        Gate::Challenge {
            status: kind.status(),
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;

    fn register(extra: &[(&str, String)]) -> Message {
        let b = extra.iter().fold(
            Builder::request("REGISTER", "sip:sca.test")
                .header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1;rport")
                .header("From", "<sip:60970@sca.test>;tag=t1")
                .header("To", "<sip:60970@sca.test>")
                .header("Call-ID", "reg-1")
                .header("CSeq", "1 REGISTER"),
            |b, (n, v)| b.header(n, v),
        );
        Message::parse(b.build()).unwrap()
    }

    fn challenge_of(gate: Gate, req: &Message) -> Message {
        let Gate::Challenge { status, headers } = gate else {
            panic!("expected a challenge, got {gate:?}");
        };
        let b = headers
            .iter()
            .fold(Builder::response_to(req, status, None), |b, (n, v)| {
                b.header(n, v)
            });
        Message::parse(b.build()).unwrap()
    }

    fn keyring(password: &str) -> Keyring {
        Keyring::new(Credentials {
            user: "60970".into(),
            password: Secret::new(password),
        })
    }

    fn server(algorithms: &[Algorithm]) -> Challenger {
        Challenger::new(
            "sca.test",
            algorithms,
            vec![("60970".into(), Secret::new("right"))],
            "n",
        )
    }

    /// The request `req` answered with what `keys` holds.
    fn answered(keys: &mut Keyring, req: &Message, cseq: u32) -> Message {
        let creds = keys.authorize("REGISTER", "sip:sca.test", req.body());
        Message::parse(resend(req.raw(), Some(("z9hG4bKa2", cseq)), &creds)).unwrap()
    }

    #[test]
    fn a_phone_answers_each_algorithm_and_reuses_the_nonce_until_it_is_stale() {
        for algorithms in [
            vec![Algorithm::Md5],
            vec![Algorithm::Sha256],
            vec![Algorithm::Md5, Algorithm::Sha256],
        ] {
            let mut srv = server(&algorithms);
            let mut keys = keyring("right");
            let first = register(&[]);
            let resp = challenge_of(srv.check(&first, Kind::Www), &first);
            let got = keys.challenged(&resp).unwrap();
            // Offered both, the phone takes the stronger one.
            assert_eq!(got.algorithm, *algorithms.iter().max().unwrap());
            assert!(!got.stale);
            for n in 0..NONCE_USES {
                let again = answered(&mut keys, &first, 2 + n);
                assert_eq!(
                    srv.check(&again, Kind::Www),
                    Gate::Pass,
                    "{algorithms:?} use {n}"
                );
                assert!(again
                    .header("Authorization")
                    .unwrap()
                    .contains(&format!("nc={:08x}", n + 1)));
            }
            let spent = answered(&mut keys, &first, 9);
            let resp = challenge_of(srv.check(&spent, Kind::Www), &spent);
            assert!(keys.challenged(&resp).unwrap().stale, "{algorithms:?}");
            let fresh = answered(&mut keys, &first, 10);
            assert_eq!(srv.check(&fresh, Kind::Www), Gate::Pass);
        }
    }

    #[test]
    fn a_wrong_password_a_replay_and_a_foreign_realm_are_refused() {
        let mut srv = server(&[Algorithm::Sha256]);
        let first = register(&[]);
        let resp = challenge_of(srv.check(&first, Kind::Www), &first);
        let mut wrong = keyring("wrong");
        wrong.challenged(&resp).unwrap();
        let bad = answered(&mut wrong, &first, 2);
        let again = challenge_of(srv.check(&bad, Kind::Www), &bad);
        // Not stale: the phone must give up, not retry.
        assert!(!wrong.challenged(&again).unwrap().stale);

        let mut right = keyring("right");
        right.challenged(&resp).unwrap();
        let ok = answered(&mut right, &first, 3);
        assert_eq!(srv.check(&ok, Kind::Www), Gate::Pass);
        // The same nonce count again is a replay: stale.
        let replay = challenge_of(srv.check(&ok, Kind::Www), &ok);
        assert!(right.challenged(&replay).unwrap().stale);
        // Proxy credentials do not answer a registrar's challenge.
        let mut proxy = Keyring::new(Credentials {
            user: "60970".into(),
            password: Secret::new("right"),
        });
        proxy.held = right
            .held
            .iter()
            .map(|(_, h)| (Kind::Proxy, h.clone()))
            .collect();
        let wrong_kind = answered(&mut proxy, &first, 4);
        assert!(matches!(
            srv.check(&wrong_kind, Kind::Www),
            Gate::Challenge { .. }
        ));
    }

    #[test]
    fn unanswerable_challenges_say_why() {
        let req = register(&[]);
        let mut keys = keyring("x");
        for (headers, want) in [
            (vec![], "without a WWW-Authenticate"),
            (
                vec![("WWW-Authenticate", "Basic realm=\"x\"")],
                "not a digest challenge: Basic",
            ),
            (
                vec![(
                    "WWW-Authenticate",
                    "Digest realm=\"x\", nonce=\"n\", algorithm=MD5-sess",
                )],
                "not supported",
            ),
            (vec![("WWW-Authenticate", "Digest nonce=\"n\"")], "realm"),
        ] {
            let b = headers
                .iter()
                .fold(Builder::response_to(&req, 401, None), |b, (n, v)| {
                    b.header(n, v)
                });
            let e = keys
                .challenged(&Message::parse(b.build()).unwrap())
                .unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let ok = Message::parse(Builder::response_to(&req, 200, None).build()).unwrap();
        assert!(keys.challenged(&ok).is_err());
    }

    #[test]
    fn resend_keeps_the_request_but_its_transaction_and_credentials() {
        let req = register(&[
            ("Authorization", "Digest old".into()),
            ("X-Scacheck", "teardown".into()),
        ]);
        let bytes = resend(
            req.raw(),
            Some(("z9hG4bKnew", 7)),
            &[(Kind::Proxy, "Digest username=\"u\"".into())],
        );
        let m = Message::parse(bytes).unwrap();
        assert_eq!(m.via_branch().as_deref(), Some("z9hG4bKnew"));
        assert_eq!(m.cseq(), Some((7, "REGISTER")));
        assert_eq!(m.header("Authorization"), None);
        assert_eq!(
            m.header("Proxy-Authorization"),
            Some("Digest username=\"u\"")
        );
        assert_eq!(m.header("X-Scacheck"), Some("teardown"));
        assert!(m.header("Via").unwrap().ends_with(";rport"));
        // Without a new transaction only the credentials change.
        let same = Message::parse(resend(req.raw(), None, &[])).unwrap();
        assert_eq!(same.via_branch().as_deref(), Some("z9hG4bKa1"));
        assert_eq!(same.cseq(), Some((1, "REGISTER")));
        assert_eq!(same.body(), req.body());
    }

    #[test]
    fn a_secret_is_never_printed() {
        let c = Credentials {
            user: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", keyring("hunter2")).contains("hunter2"));
    }
}
