//! SIP over TLS: what the socket edge ([`super::transport`]) needs to speak
//! it, and nothing of SIP.
//!
//! - [`Trust`]: how a phone checks the server it connects to: against the
//!   CA certificates of a PEM file (one or more), or not at all
//!   ([`Trust::Insecure`], for lab servers; every report says so);
//! - [`TlsSettings`]: that trust, the name the server is checked against
//!   and sent as SNI (the profile's domain unless it names another), the
//!   certificate an endpoint presents when it accepts a connection (a
//!   server such as Kamailio opens one to a phone's Contact), and how the
//!   phones write their URIs over TLS ([`TlsUri`]); it makes the rustls
//!   client and server configurations;
//! - [`TestPki`]: a throwaway CA, a server certificate for a domain and
//!   127.0.0.1 and a certificate for phones, made fresh with rcgen (the
//!   embedded server makes one per start; a test writes its CA to a file);
//! - [`KeyLogSink`]: rustls' [`rustls::KeyLog`] collecting the session
//!   secrets as the NSS key log lines `SSLKEYLOGFILE` holds, bounded, one
//!   sink per case, so that a capture of the encrypted traffic can be
//!   decrypted in Wireshark.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// What every report says of a TLS run whose server certificate was not
/// verified (the profile's `[tls] insecure = true`).
pub const INSECURE: &str =
    "TLS: the server's certificate was not verified ([tls] insecure = true in the profile)";

/// What every report says of a case run over TLS (its key is `key`): how
/// its capture holds it.
pub fn captured(key: &str) -> String {
    format!(
        "the SIP went over TLS: {key}.pcap holds it in clear, as the TCP segments it ran in \
         on the real ports (read back, it is TCP); {key}.keys holds the sessions' secrets \
         (NSS key log) to decrypt a capture of the encrypted traffic"
    )
}

/// What a capture check says of SIP that went over TLS but is read from
/// a capture in clear (as a TLS run's `<case>.pcap` holds it).
pub const READ_AS_TCP: &str = "the phones' Via says TLS: this capture holds the SIP of TLS \
     connections in clear (as a TLS run's <case>.pcap does), read back as the TCP it ran in";

/// Whether a message's (top) Via names TLS as its transport.
pub fn via_says_tls(raw: &[u8]) -> bool {
    super::Message::parse(raw.to_vec()).is_ok_and(|m| message_says_tls(&m))
}

/// [`via_says_tls`] of a message already parsed.
pub fn message_says_tls(m: &super::Message) -> bool {
    m.header("Via")
        .map(|v| v.trim_start().to_ascii_uppercase())
        .is_some_and(|v| v.starts_with("SIP/2.0/TLS"))
}

/// Why TLS could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A CA file that cannot be read, is not PEM, or holds no usable
    /// certificate.
    #[error("CA file {}: {why}", path.display())]
    CaFile { path: PathBuf, why: String },
    /// A name the server cannot be checked against.
    #[error("server name {name:?}: {why}")]
    ServerName { name: String, why: String },
    /// rcgen could not make a throwaway certificate.
    #[error("making throwaway certificates: {0}")]
    Generate(String),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// How phones write their own URIs over TLS (the profile's `uri`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsUri {
    /// `<sip:user@host:port;transport=tls>`, `sip:` AoRs and Request-URIs.
    #[default]
    TransportParam,
    /// `<sips:user@host:port>`, `sips:` AoRs and Request-URIs (RFC 3261
    /// 19.1: TLS on every hop).
    Sips,
}

impl TlsUri {
    /// The profile's spelling: `transport-param` or `sips`.
    pub fn parse(s: &str) -> Option<TlsUri> {
        match s {
            "transport-param" => Some(TlsUri::TransportParam),
            "sips" => Some(TlsUri::Sips),
            _ => None,
        }
    }
}

/// How a phone checks the server's certificate.
#[derive(Clone)]
pub enum Trust {
    /// Against these CA certificates (and the server name).
    Roots(Arc<RootCertStore>),
    /// Not at all: any certificate is accepted (the handshake's signatures
    /// are still checked). For lab servers only; said in every report.
    Insecure,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Roots(r) => write!(f, "Roots({} CA certificates)", r.len()),
            Trust::Insecure => f.write_str("Insecure"),
        }
    }
}

impl Trust {
    /// The CA certificates of a PEM file (every `CERTIFICATE` section; other
    /// sections are passed over). A file that cannot be read, is not PEM or
    /// holds no certificate rustls can use is an error naming the file.
    pub fn ca_file(path: &Path) -> Result<Trust, TlsError> {
        let bad = |why: String| TlsError::CaFile {
            path: path.to_path_buf(),
            why,
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        Trust::ca_pem(&pem).map_err(bad)
    }

    /// The CA certificates of PEM text; the error says what is wrong.
    pub fn ca_pem(pem: &[u8]) -> Result<Trust, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in it (no -----BEGIN CERTIFICATE----- section)".into());
        }
        Trust::certificates(certs)
    }

    /// These CA certificates.
    pub fn certificates(certs: Vec<CertificateDer<'static>>) -> Result<Trust, String> {
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| format!("certificate {}: {e}", i + 1))?;
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }
}

/// A certificate chain and its private key: what an endpoint presents.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({} certificates)", self.chain.len())
    }
}

/// What an endpoint needs to speak TLS: how it checks a server it
/// connects to and by what name, what it presents when it accepts a
/// connection, and how the phones write their URIs.
#[derive(Clone)]
pub struct TlsSettings {
    pub trust: Trust,
    /// Checked against the server's certificate and sent as SNI.
    server_name: ServerName<'static>,
    /// Presented to a peer that connects to us.
    pub identity: Identity,
    pub uri: TlsUri,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("trust", &self.trust)
            .field("server_name", &self.server_name.to_str())
            .field("uri", &self.uri)
            .finish()
    }
}

/// A name a server's certificate can be checked against: a DNS name or an
/// IP address.
pub fn check_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::ServerName {
        name: name.to_string(),
        why: e.to_string(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// `server_name` is a DNS name or an IP address.
    pub fn new(
        trust: Trust,
        server_name: &str,
        identity: Identity,
        uri: TlsUri,
    ) -> Result<TlsSettings, TlsError> {
        let server_name = check_server_name(server_name)?;
        Ok(TlsSettings {
            trust,
            server_name,
            identity,
            uri,
        })
    }

    /// Whether the server's certificate goes unchecked.
    pub fn insecure(&self) -> bool {
        matches!(self.trust, Trust::Insecure)
    }

    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The configuration of connections we open: the server checked as
    /// [`TlsSettings::trust`] says, no client certificate, secrets to `keys`.
    pub fn client_config(&self, keys: &KeyLogSink) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.trust {
            Trust::Roots(roots) => builder.with_root_certificates(roots.clone()),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))),
        };
        let mut config = builder.with_no_client_auth();
        config.key_log = Arc::new(keys.clone());
        Ok(Arc::new(config))
    }

    /// The configuration of connections we accept: our identity, client
    /// certificates not asked for, secrets to `keys`.
    pub fn server_config(&self, keys: &KeyLogSink) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.key_log = Arc::new(keys.clone());
        Ok(Arc::new(config))
    }
}

/// The verifier of [`Trust::Insecure`]: any certificate for any name; the
/// handshake signatures are still verified, so the session is a real one.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A throwaway PKI: a CA, a server certificate it signed for a domain and
/// 127.0.0.1, and one for phones (127.0.0.1 and `phone.<domain>`). Fresh
/// keys every time (ECDSA P-256): nothing here is a secret worth keeping.
pub struct TestPki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    server: (Vec<CertificateDer<'static>>, Vec<u8>),
    server_pem: (String, String),
    phone: (Vec<CertificateDer<'static>>, Vec<u8>),
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestPki")
    }
}

impl TestPki {
    pub fn generate(domain: &str) -> Result<TestPki, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        // Named by its key: two throwaway CAs are never taken for one
        // another (a phone given the wrong one sees an unknown issuer).
        let id = hex(&ca_key.public_key_raw()[1..9]);
        ca.distinguished_name
            .push(DnType::CommonName, format!("scacheck throwaway CA {id}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key).map_err(failed)?;
        let leaf = |names: Vec<String>, usages: Vec<Eku>| {
            let key = KeyPair::generate().map_err(failed)?;
            let mut params = CertificateParams::new(names.clone()).map_err(failed)?;
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].as_str());
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;
            Ok::<_, TlsError>((cert, key))
        };
        let (server, server_key) = leaf(
            vec![domain.to_string(), "127.0.0.1".into()],
            vec![Eku::ServerAuth],
        )?;
        let (phone, phone_key) = leaf(
            vec![format!("phone.{domain}"), "127.0.0.1".into()],
            vec![Eku::ServerAuth, Eku::ClientAuth],
        )?;
        Ok(TestPki {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            server: (
                vec![server.der().clone(), ca.der().clone()],
                server_key.serialize_der(),
            ),
            server_pem: (
                format!("{}{}", server.pem(), ca.pem()),
                server_key.serialize_pem(),
            ),
            phone: (
                vec![phone.der().clone(), ca.der().clone()],
                phone_key.serialize_der(),
            ),
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate (PEM) to `path`, for a profile's `ca_file`.
    pub fn write_ca(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// Writes the server's certificate chain and its key (PEM, PKCS#8), for
    /// a TLS server under test.
    pub fn write_server(&self, chain: &Path, key: &Path) -> std::io::Result<()> {
        std::fs::write(chain, &self.server_pem.0)?;
        std::fs::write(key, &self.server_pem.1)
    }

    /// Trusts this CA only.
    pub fn trust(&self) -> Trust {
        match Trust::certificates(vec![self.ca.clone()]) {
            Ok(t) => t,
            // A certificate rcgen just made is always one rustls reads.
            Err(_) => Trust::Roots(Arc::new(RootCertStore::empty())),
        }
    }

    /// The server's certificate (for the domain and 127.0.0.1) and key.
    pub fn server_identity(&self) -> Identity {
        identity(&self.server)
    }

    /// The phones' certificate and key.
    pub fn phone_identity(&self) -> Identity {
        identity(&self.phone)
    }
}

fn identity((chain, key): &(Vec<CertificateDer<'static>>, Vec<u8>)) -> Identity {
    Identity {
        chain: chain.clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
    }
}

/// The most key log lines a case keeps: a TLS 1.3 session logs five, so
/// this is hundreds of connections; past it lines are counted, not kept.
pub const MAX_KEY_LINES: usize = 4096;

#[derive(Default)]
struct KeyLines {
    lines: Vec<String>,
    dropped: usize,
}

/// Collects the secrets of every TLS session of a case as NSS key log
/// lines (`CLIENT_RANDOM <client random> <secret>`, `CLIENT_HANDSHAKE_TRAFFIC_SECRET ...`,
/// hex), in the order rustls gives them, at most [`MAX_KEY_LINES`]. Clones
/// share one sink.
#[derive(Clone, Default)]
pub struct KeyLogSink(Arc<Mutex<KeyLines>>);

impl fmt::Debug for KeyLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLogSink({} lines)", self.lock().lines.len())
    }
}

impl KeyLogSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyLines> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lines kept, then a comment (`# ...`, which key log readers pass
    /// over) saying how many were not.
    pub fn lines(&self) -> Vec<String> {
        let held = self.lock();
        let mut out = held.lines.clone();
        if held.dropped > 0 {
            out.push(format!(
                "# {} more lines not kept (at most {MAX_KEY_LINES} per case)",
                held.dropped
            ));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.lock().lines.is_empty()
    }
}

impl rustls::KeyLog for KeyLogSink {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut held = self.lock();
        if held.lines.len() >= MAX_KEY_LINES {
            held.dropped += 1;
            return;
        }
        let line = format!("{label} {} {}", hex(client_random), hex(secret));
        held.lines.push(line);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::KeyLog as _;

    #[test]
    fn a_ca_file_of_one_or_more_certificates_is_trusted() {
        let (a, b) = (
            TestPki::generate("a.test").unwrap(),
            TestPki::generate("b.test").unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.pem");
        a.write_ca(&one).unwrap();
        match Trust::ca_file(&one).unwrap() {
            Trust::Roots(r) => assert_eq!(r.len(), 1),
            Trust::Insecure => panic!("insecure"),
        }
        // A bundle, with a key and prose around it, as real bundles are.
        let two = dir.path().join("two.pem");
        let (_, key) = &a.server_pem;
        std::fs::write(
            &two,
            format!("issued for the lab\n{}{key}{}", a.ca_pem(), b.ca_pem()),
        )
        .unwrap();
        match Trust::ca_file(&two).unwrap() {
            Trust::Roots(r) => assert_eq!(r.len(), 2),
            Trust::Insecure => panic!("insecure"),
        }
        let settings = TlsSettings::new(
            Trust::ca_file(&two).unwrap(),
            "a.test",
            a.phone_identity(),
            TlsUri::Sips,
        )
        .unwrap();
        assert!(!settings.insecure());
        let keys = KeyLogSink::default();
        settings.client_config(&keys).unwrap();
        settings.server_config(&keys).unwrap();
    }

    #[test]
    fn a_bad_ca_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        for (contents, says) in [
            ("just some text\n", "no certificate in it"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "not PEM",
            ),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n", "not PEM"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate 1",
            ),
        ] {
            std::fs::write(&path, contents).unwrap();
            let e = Trust::ca_file(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(says), "{contents:?}: {e}");
        }
        let missing = dir.path().join("missing.pem");
        let e = Trust::ca_file(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_server_name_must_be_a_name_or_an_address() {
        let pki = TestPki::generate("sca.test").unwrap();
        for ok in ["sca.test", "127.0.0.1", "::1"] {
            TlsSettings::new(Trust::Insecure, ok, pki.phone_identity(), TlsUri::default()).unwrap();
        }
        let e = TlsSettings::new(
            Trust::Insecure,
            "not a name",
            pki.phone_identity(),
            TlsUri::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"not a name\""), "{e}");
    }

    #[test]
    fn key_log_lines_are_nss_lines_and_bounded() {
        let sink = KeyLogSink::default();
        let shared = sink.clone();
        shared.log("CLIENT_RANDOM", &[0x00, 0xab, 0x10], &[0xff, 0x01]);
        shared.log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", &[1; 32], &[2; 48]);
        let lines = sink.lines();
        assert_eq!(lines[0], "CLIENT_RANDOM 00ab10 ff01");
        let parts: Vec<&str> = lines[1].split(' ').collect();
        assert_eq!(parts[0], "CLIENT_HANDSHAKE_TRAFFIC_SECRET");
        assert_eq!(parts[1], "01".repeat(32));
        assert_eq!(parts[2], "02".repeat(48));
        for _ in 0..MAX_KEY_LINES {
            sink.log("CLIENT_TRAFFIC_SECRET_0", &[3; 32], &[4; 32]);
        }
        let lines = sink.lines();
        assert_eq!(lines.len(), MAX_KEY_LINES + 1);
        assert_eq!(
            lines.last().unwrap(),
            "# 2 more lines not kept (at most 4096 per case)"
        );
    }

    #[test]
    fn uri_choices_are_spelled_as_in_the_profile() {
        assert_eq!(TlsUri::parse("sips"), Some(TlsUri::Sips));
        assert_eq!(
            TlsUri::parse("transport-param"),
            Some(TlsUri::TransportParam)
        );
        assert_eq!(TlsUri::parse("tls"), None);
    }
}
