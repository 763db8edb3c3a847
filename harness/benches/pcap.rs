//! Capture reading speed: `cargo bench --bench pcap`. Generates a capture of
//! at least a million SIP messages over UDP and TCP, reads it back through
//! the same reader `scacheck pcap check` uses (framing, reassembly, SIP
//! detection), and prints SIP messages per second and the reading process's
//! peak memory; with tshark installed, also `tshark -q -z sip,stat` on the
//! same file and the ratio. Figures only; aim: 500 000 messages/s on one
//! core, memory that does not grow with the file. Then the HEP source's
//! decoder on the same kind of messages as HEPv3 datagrams (what a server
//! mirroring to `--events hep:` sends), in datagrams per second.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use scacheck::pcap::{write_packets, Packet, Reader};
use scacheck::sip::Transport;

/// One call's messages, with its Call-ID and ports to vary.
fn call(n: u64, transport: Transport, t0: SystemTime) -> Vec<Packet> {
    let proto = transport.via_token();
    let port = 10_000 + (n % 50_000) as u16;
    let phone: SocketAddr = format!("127.0.0.{}:{port}", 2 + (n / 50_000) % 200)
        .parse()
        .unwrap();
    let server: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let head = |start: &str, cseq: &str| {
        format!(
            "{start}\r\nVia: SIP/2.0/{proto} {phone};branch=z9hG4bK{n}\r\nFrom: <sip:60972@sca.test>;tag=a{n}\r\n\
             To: <sip:60970@sca.test>;tag=b{n}\r\nCall-ID: bench-{n}@scacheck\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let msgs = [
        (
            phone,
            server,
            head("INVITE sip:60970@sca.test SIP/2.0", "1 INVITE"),
        ),
        (server, phone, head("SIP/2.0 100 Trying", "1 INVITE")),
        (server, phone, head("SIP/2.0 180 Ringing", "1 INVITE")),
        (server, phone, head("SIP/2.0 200 OK", "1 INVITE")),
        (
            phone,
            server,
            head("ACK sip:60970@127.0.0.1:5070 SIP/2.0", "1 ACK"),
        ),
        (
            phone,
            server,
            head("BYE sip:60970@127.0.0.1:5070 SIP/2.0", "2 BYE"),
        ),
        (server, phone, head("SIP/2.0 200 OK", "2 BYE")),
    ];
    msgs.into_iter()
        .enumerate()
        .map(|(i, (src, dst, text))| Packet {
            time: t0 + Duration::from_micros(n * 10 + i as u64),
            src,
            dst,
            transport,
            raw: text.into_bytes(),
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The reading side, in its own process so that its peak memory is its own.
fn read(path: &Path) {
    let start = Instant::now();
    let mut reader = Reader::open(path).expect("open the capture");
    let mut count = 0u64;
    while let Ok(Some(_)) = reader.next_packet() {
        count += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{count} {secs} {} {:?}", peak_rss_mib(), reader.skipped());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--read") {
        return read(Path::new(&args[i + 1]));
    }
    let messages: u64 = std::env::var("SCACHECK_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let calls = messages.div_ceil(7);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-capture.pcap");
    let t0 = SystemTime::now();
    let packets: Vec<Packet> = (0..calls)
        .flat_map(|n| {
            call(
                n,
                if n % 2 == 0 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                },
                t0,
            )
        })
        .collect();
    let file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create the capture"));
    write_packets(file, &packets).expect("write the capture");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "capture: {} SIP messages ({} calls, half UDP, half TCP), {:.0} MiB, {}",
        packets.len(),
        calls,
        size as f64 / 1048576.0,
        path.display()
    );
    // HEP: a batch of the same messages as datagrams, decoded again and
    // again up to the same count (a million datagrams would not fit the
    // point of measuring memory above).
    let batch: Vec<Vec<u8>> = packets
        .iter()
        .take(10_000)
        .map(|p| scacheck::hep::encode(p, 1).expect("encode"))
        .collect();
    drop(packets);
    let hep = Instant::now();
    let mut decoded = 0u64;
    while decoded < messages {
        for d in &batch {
            let decoded_one = scacheck::hep::decode(std::hint::black_box(d), t0);
            if std::hint::black_box(decoded_one).is_ok() {
                decoded += 1;
            }
        }
    }
    let hep_secs = hep.elapsed().as_secs_f64();
    println!(
        "HEPv3 decoder: {decoded} datagrams in {hep_secs:.2} s = {:.0} datagrams/s",
        decoded as f64 / hep_secs
    );

    let out = Command::new(std::env::current_exe().expect("this bench"))
        .arg("--read")
        .arg(&path)
        .output()
        .expect("run the reader");
    let line = String::from_utf8_lossy(&out.stdout);
    let mut f = line.split_whitespace();
    let (count, secs, rss): (u64, f64, f64) = (
        f.next().and_then(|v| v.parse().ok()).unwrap_or(0),
        f.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
        f.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
    );
    println!("scacheck reader: {count} SIP messages in {secs:.2} s = {:.0} messages/s, peak memory {rss:.0} MiB", count as f64 / secs);

    let tshark = Instant::now();
    match Command::new("tshark")
        .args(["-q", "-z", "sip,stat", "-r"])
        .arg(&path)
        .output()
    {
        Ok(o) if o.status.success() => {
            let t = tshark.elapsed().as_secs_f64();
            println!(
                "tshark -q -z sip,stat: {t:.2} s; scacheck is {:.1}x tshark's speed",
                t / secs
            );
        }
        _ => println!("tshark: not installed (apt-get install tshark), no comparison"),
    }
}
