//! A busy SCA system's capture, made of the real ones: the 14 recorded
//! Kamailio captures (`fixtures/captures/kamailio/`, one case each, with
//! its phones' registrations, call-info and line-seize SUBSCRIBEs, NOTIFYs
//! of the appearances, calls, teardown and leak-check probes) are episodes
//! that the lines of a 100-line pool go through one after another, each
//! line's episodes interleaved in time with every other line's.
//!
//! Each episode is a template rewritten for its line and its turn: the SIP
//! users `60970-T`/`60972-T` of the template's line T become the line's,
//! the run's unique token in every Call-ID and tag becomes the episode's,
//! each phone moves to an address of its own (so no two episodes share a
//! UDP endpoint or a TCP connection), Content-Length is made right again,
//! and odd lines run over TCP (Via and `transport=` say so). Times keep
//! the template's own spacing, so every quiet gap the judge reads is
//! where Kamailio left it. Nothing here depends on scacheck's judging:
//! only its capture reader (to read the templates) and writer.

use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use scacheck::pcap::{Packet, PacketWriter, Reader};
use scacheck::sip::Transport;

/// One recorded capture, ready to be replayed on any line.
pub struct Template {
    #[allow(dead_code)]
    pub case: String,
    /// Its messages, times relative to its first.
    packets: Vec<(Duration, Packet)>,
    /// The template's line number (`60970-T`).
    line: String,
    /// The run's unique token in its Call-IDs and tags.
    token: String,
    /// The server's address (the busiest endpoint).
    server: SocketAddr,
    pub length: Duration,
    /// The transport it was recorded over, when its case runs over that
    /// alone (`transports = [...]` in its case file: a relay that is UDP,
    /// a connection that closes): it is replayed on it whatever the line.
    fixed: Option<Transport>,
}

/// The templates of a folder of recorded captures, by file name order.
pub fn templates(dir: &Path) -> Vec<Template> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("the recorded captures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    names.sort();
    names.iter().filter_map(|p| template(p)).collect()
}

fn template(path: &Path) -> Option<Template> {
    let mut reader = Reader::open(path).ok()?;
    let mut packets = Vec::new();
    while let Ok(Some(p)) = reader.next_packet() {
        packets.push(p);
    }
    let t0 = packets.first()?.time;
    let mut seen: std::collections::HashMap<SocketAddr, usize> = Default::default();
    for p in &packets {
        *seen.entry(p.src).or_default() += 1;
        *seen.entry(p.dst).or_default() += 1;
    }
    let server = seen.into_iter().max_by_key(|(_, n)| *n)?.0;
    // The template's line: the number in its first REGISTER's To user
    // (`<sip:60970-N@sca.test>`), the AoR of every user of the line.
    let text = packets
        .iter()
        .map(|p| String::from_utf8_lossy(&p.raw).into_owned())
        .find(|t| t.starts_with("REGISTER "))?;
    let to = text.lines().find_map(|l| l.strip_prefix("To: "))?;
    let after = to
        .split_once("sip:60970-")
        .or(to.split_once("sip:60972-"))?
        .1;
    let line: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    if line.is_empty() {
        return None;
    }
    // The run's unique token (process and nonce), last in every Call-ID,
    // tag and branch it made: `reg-60970-<case>-udp-<token>@scacheck`.
    let call_id = text
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))?
        .trim()
        .to_string();
    let id = call_id.split('@').next()?;
    let token = id
        .split_once("-udp-")
        .or(id.split_once("-tcp-"))?
        .1
        .to_string();
    let last = packets.last()?.time;
    let case = path.file_stem()?.to_string_lossy().into_owned();
    let cases = path.ancestors().nth(4)?.join("cases");
    let fixed = std::fs::read_to_string(cases.join(format!("{case}.toml")))
        .ok()
        .filter(|t| t.lines().any(|l| l.starts_with("transports = ")))
        .map(|_| packets[0].transport);
    Some(Template {
        case,
        fixed,
        length: last.duration_since(t0).unwrap_or_default(),
        packets: packets
            .into_iter()
            .map(|p| (p.time.duration_since(t0).unwrap_or_default(), p))
            .collect(),
        line,
        token,
        server,
    })
}

/// `text` with every `from` not followed by a digit replaced by `to`.
fn replace_token(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let end = i + from.len();
        let digit_after = rest[end..].starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if digit_after { from } else { to });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A message with its Content-Length made to fit its body again.
fn fix_length(text: String) -> Vec<u8> {
    let Some(split) = text.find("\r\n\r\n") else {
        return text.into_bytes();
    };
    let body = text.len() - split - 4;
    let head: Vec<String> = text[..split]
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {body}")
            } else {
                l.to_string()
            }
        })
        .collect();
    let mut out = head.join("\r\n");
    out.push_str(&text[split..]);
    out.into_bytes()
}

impl Template {
    /// The template as episode `episode` of line `line`, starting at `at`.
    pub fn episode(
        &self,
        line: usize,
        episode: usize,
        transport: Transport,
        at: SystemTime,
    ) -> Vec<Packet> {
        let token = format!("L{line}E{episode}");
        let phone_ip = IpAddr::V4(Ipv4Addr::new(
            10,
            (line / 250) as u8,
            (line % 250) as u8,
            (episode % 250 + 1) as u8,
        ));
        let moved = |a: SocketAddr| {
            if a == self.server {
                a
            } else {
                SocketAddr::new(phone_ip, a.port())
            }
        };
        let mut ports: Vec<u16> = self
            .packets
            .iter()
            .flat_map(|(_, p)| [p.src, p.dst])
            .filter(|a| *a != self.server)
            .map(|a| a.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let server_ip = self.server.ip().to_string();
        self.packets
            .iter()
            .map(|(offset, p)| {
                let mut text = String::from_utf8_lossy(&p.raw).into_owned();
                for user in ["60970-", "60972-"] {
                    text = replace_token(
                        &text,
                        &format!("{user}{}", self.line),
                        &format!("{user}{line}"),
                    );
                }
                text = text.replace(&self.token, &token);
                for port in &ports {
                    text = replace_token(
                        &text,
                        &format!("{server_ip}:{port}"),
                        &format!("{phone_ip}:{port}"),
                    );
                }
                if transport == Transport::Tcp {
                    text = text
                        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                        .replace(";transport=udp", ";transport=tcp");
                }
                Packet {
                    time: at + *offset,
                    src: moved(p.src),
                    dst: moved(p.dst),
                    transport,
                    raw: fix_length(text),
                }
            })
            .collect()
    }
}

/// What was written.
pub struct Made {
    pub messages: u64,
    pub episodes: u64,
    pub bytes: u64,
}

/// One line's episodes, made as they are needed.
struct LineFeed {
    line: usize,
    next_episode: usize,
    messages: u64,
    queue: VecDeque<Packet>,
    next_start: SystemTime,
}

/// Writes to `path` a capture of `lines` lines (numbered from 1), each
/// going through the templates in turn (line L starting with template L)
/// until it has `per_line` messages, its episodes a pause of 150 to 450 ms
/// apart, every line's interleaved in time. Odd lines over TCP.
pub fn write(path: &Path, templates: &[Template], lines: usize, per_line: u64) -> Made {
    let file = std::fs::File::create(path).expect("create the capture");
    let mut writer = PacketWriter::new(file).expect("write the header");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    let mut feeds: Vec<LineFeed> = (1..=lines)
        .map(|line| LineFeed {
            line,
            next_episode: 0,
            messages: 0,
            queue: VecDeque::new(),
            next_start: t0 + Duration::from_millis(line as u64 * 7),
        })
        .collect();
    let mut made = Made {
        messages: 0,
        episodes: 0,
        bytes: 0,
    };
    // By next message time, earliest first.
    let mut heap: BinaryHeap<std::cmp::Reverse<(SystemTime, usize)>> = BinaryHeap::new();
    let refill = |f: &mut LineFeed, made: &mut Made| -> bool {
        if !f.queue.is_empty() {
            return true;
        }
        if f.messages >= per_line {
            return false;
        }
        let t = &templates[(f.line + f.next_episode) % templates.len()];
        let transport = t.fixed.unwrap_or(if f.line % 2 == 1 {
            Transport::Tcp
        } else {
            Transport::Udp
        });
        let packets = t.episode(f.line, f.next_episode, transport, f.next_start);
        f.messages += packets.len() as u64;
        f.next_episode += 1;
        made.episodes += 1;
        let pause = 150 + (f.line * 37 + f.next_episode * 53) % 300;
        f.next_start += t.length + Duration::from_millis(pause as u64);
        f.queue.extend(packets);
        true
    };
    for (i, f) in feeds.iter_mut().enumerate() {
        if refill(f, &mut made) {
            heap.push(std::cmp::Reverse((f.queue[0].time, i)));
        }
    }
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        let f = &mut feeds[i];
        let Some(p) = f.queue.pop_front() else {
            continue;
        };
        made.messages += 1;
        made.bytes += p.raw.len() as u64;
        writer.write(&p).expect("write a message");
        if refill(f, &mut made) {
            heap.push(std::cmp::Reverse((f.queue[0].time, i)));
        }
    }
    writer.finish().expect("flush the capture");
    made
}

/// The Kamailio profile for a pool of `lines` lines, written beside the
/// capture: the kept profile with its `lines` changed.
pub fn profile(root: &Path, lines: usize, to: &Path) {
    let kept = std::fs::read_to_string(root.join("fixtures/targets/kamailio/target.toml"))
        .expect("the Kamailio profile");
    let text: String = kept
        .lines()
        .map(|l| {
            if l.starts_with("lines = ") {
                format!("lines = {lines}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(to, text).expect("write the profile");
}
