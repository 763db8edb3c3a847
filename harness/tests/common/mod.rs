//! What the integration tests share: the repository's own suite.

use std::path::Path;

use scacheck::check::Capture;
use scacheck::outcome::CaseResult;
use scacheck::pcap::{Packet, Reader};
use scacheck::suite::Prepared;
use scacheck::target::Profile;
use scacheck::topology::Topology;

/// Every case in cases/ with its golden files, or what is wrong with them.
pub fn load() -> Result<(Vec<Prepared>, Topology), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topology = Topology::reference();
    let suite = Prepared::load_suite(
        &root.join("cases"),
        &root.join("fixtures/golden"),
        &topology,
    )
    .map_err(|e| e.to_string())?;
    Ok((suite, topology))
}

/// The same, for tests that cannot run without it.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn suite() -> (Vec<Prepared>, Topology) {
    load().unwrap_or_else(|e| panic!("{e}"))
}

/// Kamailio's recorded captures, each judged as `scacheck pcap check`
/// judges it with the profile.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn kamailio_captures(
    prepared: &[Prepared],
    topology: &Topology,
) -> (Profile, Vec<(Prepared, Vec<Packet>)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = Profile::load(
        &root.join("fixtures/targets/kamailio/target.toml"),
        topology,
    )
    .unwrap();
    let captures = prepared
        .iter()
        .map(|p| {
            let path = root.join(format!("fixtures/captures/kamailio/{}.pcap", p.case.id));
            let mut reader = Reader::open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let packets: Vec<Packet> =
                std::iter::from_fn(|| reader.next_packet().unwrap()).collect();
            (p.clone(), packets)
        })
        .collect();
    (profile, captures)
}

/// One capture checked with the profile, as `scacheck pcap check --case` does.
#[allow(dead_code)]
pub fn judge_capture(
    p: &Prepared,
    packets: &[Packet],
    topology: &Topology,
    profile: &Profile,
) -> CaseResult {
    let capture = Capture {
        packets: packets.to_vec(),
        skipped: Default::default(),
        broken: None,
    };
    let (_, result) = capture
        .judge(
            Path::new("capture"),
            std::slice::from_ref(p),
            &profile.lines,
            &profile.deviations,
            topology,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", p.case.id));
    result
}

/// A capture as a foreign phone's would be (`fixtures/captures/foreign/`):
/// no REGISTER, no response to one, no `User-Agent` header, so that
/// nothing but the SCA signalling says who the phones are. Only header
/// lines go; the bodies, and so Content-Length, are untouched.
#[allow(dead_code)]
pub fn foreign(packets: &[Packet]) -> Vec<Packet> {
    packets
        .iter()
        .filter(|p| !about_register(&p.raw))
        .map(|p| Packet {
            raw: without_user_agent(&p.raw),
            ..p.clone()
        })
        .collect()
}

/// The header section's lines (the start line first), and where the body
/// begins.
fn head(raw: &[u8]) -> (Vec<&[u8]>, usize) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 2);
    (raw[..end].split(|b| *b == b'\n').collect(), end)
}

/// A REGISTER, or a response to one (its CSeq's method).
fn about_register(raw: &[u8]) -> bool {
    let (lines, _) = head(raw);
    lines.iter().any(|l| {
        let l = String::from_utf8_lossy(l);
        l.starts_with("REGISTER ")
            || l.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("CSeq")
                    && value.split_whitespace().nth(1) == Some("REGISTER")
            })
    })
}

fn without_user_agent(raw: &[u8]) -> Vec<u8> {
    let (lines, end) = head(raw);
    let mut out = Vec::with_capacity(raw.len());
    for line in lines.iter().filter(|l| !l.is_empty()) {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        if line.contains(&b':') && name.trim_ascii().eq_ignore_ascii_case(b"User-Agent") {
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(&raw[end..]);
    out
}

/// Names a race's phones by their part from its stage on (`<winner>`,
/// `<loser>`), as the case's notes say who won (README "Races"): for
/// comparing two runs' events when the server may grant either phone.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn race_parts(r: &scacheck::outcome::CaseResult) -> impl Fn(&str, String) -> String + '_ {
    // A race's winner is the server's to pick (README "Races"): from its
    // stage on, the racing phones are named by their part, as the notes
    // say who won, so that two runs the other phone won compare equal.
    let mut parts: Vec<(String, String, String)> = Vec::new();
    for n in &r.notes {
        let Some(rest) = n.strip_prefix("stage ") else {
            continue;
        };
        let Some((stage, rest)) = rest.split_once(": a line-seize race of ") else {
            continue;
        };
        let Some((phones, won)) = rest.split_once(", won by ") else {
            continue;
        };
        let won = won.split(' ').next().unwrap_or_default().to_string();
        let lost = phones
            .split(" and ")
            .find(|p| *p != won)
            .unwrap_or_default()
            .to_string();
        parts.push((stage.to_string(), won, lost));
    }
    let stages: Vec<&String> = r.events.iter().map(|(s, _)| s).collect();
    let at = move |s: &str| stages.iter().position(|x| x.as_str() == s);
    move |stage: &str, text: String| -> String {
        let Some((_, won, lost)) = parts.iter().rfind(|(s, _, _)| at(s) <= at(stage)) else {
            return text;
        };
        // Longest first: 60970_2 before 60970.
        let mut names = [(won.as_str(), "<winner>"), (lost.as_str(), "<loser>")];
        names.sort_by_key(|(dn, _)| std::cmp::Reverse(dn.len()));
        let mut out = text;
        for (i, (dn, _)) in names.iter().enumerate() {
            out = out.replace(&format!("\"{dn}\""), &format!("\"@{i}\""));
            out = out.replace(&format!("sca.{dn}"), &format!("sca.@{i}"));
            if out == *dn {
                out = format!("@{i}");
            }
        }
        for (i, (_, part)) in names.iter().enumerate() {
            out = out.replace(&format!("@{i}"), part);
        }
        out
    }
}

/// `scacheck` run from the checkout's root with `args`, to its end.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn scacheck<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("scacheck runs")
}

/// The cases of a report's summary.json, in its order (each the case's
/// object: id, verdict, first_divergence, notes, ...).
#[allow(dead_code)]
pub fn summary_cases(report: &Path) -> Vec<serde_json::Value> {
    let path = report.join("summary.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    summary["cases"].as_array().cloned().unwrap_or_default()
}
