//! The server's own view of the SIP, mirrored over HEP (`--events hep:ADDR`).
//!
//! One [`HepListener`] serves a whole run: the server is configured once to
//! mirror to one address, and a socket rebound per case would drop what
//! arrives between cases. Each case takes a [`HepView`] of it, which keeps
//! the messages to and from that case's phones (each case has its own
//! ports), turns them into the records the phones would have made and hands
//! those to the same derivers the phones' own view uses. What the view saw
//! and what it could not read is returned by [`HepView::finish`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::hep::{decode, HepError, Mirrored};
use crate::pcap::Packet;
use crate::sip::record::Record;
use crate::sip::transport::sleep_until;

type Arrival = Result<Mirrored, HepError>;
type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Arrival>>>>;

/// A UDP socket a server mirrors its SIP to, shared by every case of a run.
/// Dropping it closes the socket.
pub struct HepListener {
    addr: SocketAddr,
    subscribers: Subscribers,
    task: AbortHandle,
}

impl std::fmt::Debug for HepListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepListener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for HepListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HepListener {
    /// Binds `addr` and starts reading; every datagram goes to every view
    /// open at the time.
    pub async fn bind(addr: SocketAddr) -> io::Result<HepListener> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let subscribers: Subscribers = Arc::default();
        let to = subscribers.clone();
        let task = tokio::spawn(async move {
            // The largest UDP payload: a datagram is never cut short here.
            let mut buf = vec![0u8; 65_535];
            loop {
                let n = match socket.recv_from(&mut buf).await {
                    Ok((n, _from)) => n,
                    Err(_) => {
                        // ICMP errors surface on some platforms; carry on,
                        // without spinning should the error persist.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let arrival = decode(&buf[..n], SystemTime::now());
                to.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|tx| tx.send(arrival.clone()).is_ok());
            }
        });
        Ok(HepListener {
            addr,
            subscribers,
            task: task.abort_handle(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn subscribe(&self) -> mpsc::UnboundedReceiver<Arrival> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }
}

/// What a case's view of the mirror saw.
#[derive(Debug, Default, Clone)]
pub struct ServerView {
    /// The mirrored messages to or from the case's phones, in the order
    /// they went to the derivers.
    pub packets: Vec<Packet>,
    /// Mirrored messages between other parties (another run, a probe).
    pub unclaimed: u64,
    /// Datagrams that were not a mirrored SIP message: by reason, with
    /// the first one's error.
    pub skipped: BTreeMap<&'static str, (u64, String)>,
}

/// A request's identity for the answers that wait on it: its transaction
/// (top Via branch, CSeq method).
type RequestKey = (String, String);

#[derive(Default)]
struct State {
    who: BTreeMap<SocketAddr, String>,
    view: ServerView,
    seq: u64,
    /// The requests mirrored so far.
    requests: std::collections::HashSet<RequestKey>,
    /// Answers mirrored before their request, in arrival order.
    held: Vec<(RequestKey, Packet)>,
    /// Claimed messages in their reorder window: the server's time, our
    /// arrival time, the message.
    waiting: Vec<(SystemTime, Instant, Packet)>,
}

/// One case's share of a [`HepListener`].
pub struct HepView {
    state: Arc<Mutex<State>>,
    /// How many of the case's messages have been mirrored so far.
    mirrored: watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for HepView {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl HepView {
    /// Starts handing the records of this case's mirrored messages to
    /// `derive`, in the order the server handled them (see `State::release`).
    pub fn start(listener: &HepListener, mut derive: impl FnMut(&Record) + Send + 'static) -> Self {
        let mut rx = listener.subscribe();
        let state: Arc<Mutex<State>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel();
        let (count, mirrored) = watch::channel(0);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
            let mut handle = |step: Step| {
                let (records, n) = {
                    let mut st = lock();
                    let now = Instant::now();
                    let records = match step {
                        Step::Arrived(a) => st.take(a, now),
                        Step::Tick => st.release(now),
                        Step::Flush => st.flush(),
                    };
                    (records, st.view.packets.len())
                };
                for r in &records {
                    derive(r);
                }
                // Counted once its events are in: a waiter may then mark a stage.
                count.send_replace(n);
            };
            loop {
                let next = lock().next_release();
                tokio::select! {
                    // Biased to the stop: a server that never stops
                    // mirroring must not keep a case from finishing.
                    biased;
                    _ = &mut stopped => break,
                    a = rx.recv() => match a {
                        Some(a) => handle(Step::Arrived(a)),
                        None => break,
                    },
                    _ = sleep_until(next) => handle(Step::Tick),
                }
            }
            // What was queued when the stop came is the case's too; what
            // comes after is not.
            for _ in 0..rx.len() {
                match rx.try_recv() {
                    Ok(a) => handle(Step::Arrived(a)),
                    Err(_) => break,
                }
            }
            handle(Step::Flush);
        });
        HepView {
            state,
            mirrored,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A handle that says messages to or from an address are a phone's
    /// (its socket, or one of its TCP connections); the first claim stands.
    pub fn claimer(&self) -> impl Fn(SocketAddr, &str) + Send + Sync + 'static {
        let state = self.state.clone();
        move |addr, dn| {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .who
                .entry(addr)
                .or_insert_with(|| dn.to_string());
        }
    }

    /// What the server sends to `addr` from now on is nobody's: a relayed
    /// phone's old relay, gone (what the server sent there never reached
    /// the phone, and the phones' view does not show it either).
    pub fn disown(&self, addr: SocketAddr) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .who
            .remove(&addr);
    }

    /// Waits until `n` of the case's messages have been mirrored and their
    /// events derived, at most `deadline`; returns how many were.
    ///
    /// The mirror lags the phones: a run marks the start of a stage only
    /// once the server's view has caught up with what the phones have
    /// recorded, or a late setup event would be counted in the first stage.
    pub async fn caught_up(&self, n: usize, deadline: Duration) -> usize {
        let mut rx = self.mirrored.clone();
        let _ = tokio::time::timeout(deadline, rx.wait_for(|m| *m >= n)).await;
        let got = *rx.borrow();
        got
    }

    /// Stops, after handling what had arrived when it was called (not
    /// what keeps arriving: a server may mirror without end).
    pub async fn finish(mut self) -> ServerView {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).view)
    }
}

impl ServerView {
    /// The server's view beside the phones' records of the same case:
    /// notes on what one has and the other lacks, or, when the server
    /// mirrored nothing at all, why the case cannot be judged.
    pub fn compare(&self, phones: &[Record], to: SocketAddr) -> Result<Vec<String>, String> {
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|(reason, (n, first))| format!("{n} {reason} (first: {first})"))
            .collect();
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!("; datagrams skipped: {}", skipped.join(", "))
        };
        if self.packets.is_empty() && !phones.is_empty() {
            return Err(format!(
                "no HEP from the server about this case reached {to} ({} messages the phones exchanged with it{skipped}): is its HEP mirroring on, version 3, and pointed there?",
                phones.len()
            ));
        }
        // Matched by their bytes: the same message, as it crossed the wire.
        let mut unmatched: HashMap<&[u8], usize> = HashMap::new();
        for p in &self.packets {
            *unmatched.entry(&p.raw).or_default() += 1;
        }
        let mut missing = Vec::new();
        for r in phones {
            match unmatched.get_mut(r.raw.as_slice()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => missing.push(r.first_line()),
            }
        }
        let extra: Vec<String> = self
            .packets
            .iter()
            .filter(|p| {
                unmatched.get_mut(p.raw.as_slice()).is_some_and(|n| {
                    *n > 0 && {
                        *n -= 1;
                        true
                    }
                })
            })
            .map(|p| first_line(&p.raw))
            .collect();
        let mut notes = vec![format!(
            "HEP: the server mirrored {} messages of this case to {to}; the phones recorded {}{skipped}",
            self.packets.len(),
            phones.len()
        )];
        let first = |v: &[String]| v.first().cloned().unwrap_or_default();
        if !missing.is_empty() {
            notes.push(format!(
                "HEP: {} of the phones' messages were not mirrored (first: {})",
                missing.len(),
                first(&missing)
            ));
        }
        if !extra.is_empty() {
            notes.push(format!(
                "HEP: {} mirrored messages the phones never recorded (first: {})",
                extra.len(),
                first(&extra)
            ));
        }
        if self.unclaimed > 0 {
            notes.push(format!(
                "HEP: {} mirrored messages of other parties were passed over",
                self.unclaimed
            ));
        }
        Ok(notes)
    }
}

fn first_line(raw: &[u8]) -> String {
    let end = raw
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end.min(200)]).into_owned()
}

/// What moves a view's state on.
enum Step {
    Arrived(Arrival),
    /// The reorder window of a waiting message has passed.
    Tick,
    /// The end: everything waiting goes out.
    Flush,
}

/// How long a mirrored message waits for others mirrored before it by
/// another server process (ordered by the server's timestamps): tens of
/// microseconds apart at Kamailio, so this is ample and still far below a
/// stage's settle time.
const REORDER: Duration = Duration::from_millis(20);

impl State {
    fn take(&mut self, arrival: Arrival, now: Instant) -> Vec<Record> {
        match arrival {
            Err(e) => {
                let slot = self
                    .view
                    .skipped
                    .entry(e.reason())
                    .or_insert_with(|| (0, e.to_string()));
                slot.0 += 1;
                Vec::new()
            }
            Ok(m) => {
                let p = &m.packet;
                if !(self.who.contains_key(&p.src) || self.who.contains_key(&p.dst)) {
                    self.view.unclaimed += 1;
                    return Vec::new();
                }
                self.waiting.push((m.packet.time, now, m.packet));
                self.release(now)
            }
        }
    }

    /// The waiting message the server mirrored first (ties: first to arrive).
    fn earliest(&self) -> Option<usize> {
        (0..self.waiting.len()).min_by_key(|&i| (self.waiting[i].0, i))
    }

    /// When the earliest waiting message may go.
    fn next_release(&self) -> Option<Instant> {
        self.earliest().map(|i| self.waiting[i].1 + REORDER)
    }

    /// Messages go out in the server's order once the earliest of them has
    /// waited out the reorder window: each process stamps a message as it
    /// handles it, but their mirrors reach us in whatever order they were
    /// sent (a phone's 200 can arrive before the INVITE it answers).
    fn release(&mut self, now: Instant) -> Vec<Record> {
        let mut records = Vec::new();
        while let Some(i) = self
            .earliest()
            .filter(|&i| self.waiting[i].1 + REORDER <= now)
        {
            let (_, _, packet) = self.waiting.remove(i);
            let ready = self.causal(packet);
            records.extend(self.keep(ready));
        }
        records
    }

    /// Everything still waiting, in the server's order, then answers whose
    /// request never came.
    fn flush(&mut self) -> Vec<Record> {
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.sort_by_key(|(time, _, _)| *time);
        let mut records = Vec::new();
        for (_, _, packet) in waiting {
            let ready = self.causal(packet);
            records.extend(self.keep(ready));
        }
        records.extend(self.release_held());
        records
    }

    /// A server mirrors from several processes, each as it handles a
    /// message: the mirror of a phone's answer can overtake the mirror of
    /// the request it answers (Kamailio: a Replaces INVITE sent by one
    /// process, the phone's 200 received by another). An answer never
    /// precedes its request on the wire, so it waits for it here, and the
    /// derivers see the order the wire had. Request and answer are matched
    /// as a transaction is (RFC 3261 17.1.3): the top Via's branch and the
    /// CSeq method, so a proxy's two legs of one INVITE, which share
    /// Call-ID and CSeq, are not taken for each other.
    fn causal(&mut self, packet: Packet) -> Vec<Packet> {
        let Ok(msg) = crate::sip::Message::parse(packet.raw.clone()) else {
            return vec![packet];
        };
        let (Some(branch), Some((_, method))) = (msg.via_branch(), msg.cseq()) else {
            return vec![packet];
        };
        let key = (branch, method.to_string());
        if !msg.is_request() {
            if self.requests.contains(&key) {
                return vec![packet];
            }
            self.held.push((key, packet));
            return Vec::new();
        }
        let mut ready = vec![packet];
        let (answers, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(k, _)| *k == key);
        ready.extend(answers.into_iter().map(|(_, p)| p));
        self.held = rest;
        self.requests.insert(key);
        ready
    }

    /// The view keeps these packets; their records, for the derivers.
    fn keep(&mut self, packets: Vec<Packet>) -> Vec<Record> {
        let mut records = Vec::new();
        for p in packets {
            let more = p.records_for(&self.who, self.seq);
            self.seq += more.len() as u64;
            records.extend(more);
            self.view.packets.push(p);
        }
        records
    }

    /// At the end: answers whose request never came are the case's too.
    fn release_held(&mut self) -> Vec<Record> {
        let held: Vec<Packet> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        self.keep(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hep::encode;
    use crate::sip::record::Direction;
    use crate::sip::Transport;

    /// The mirror outpaces the view (each message takes 2 ms to derive,
    /// one comes every millisecond): finishing still takes only what was
    /// queued, rather than waiting for the server to fall silent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_view_finishes_while_the_server_keeps_mirroring() {
        let listener = HepListener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let view = HepView::start(&listener, |_| std::thread::sleep(Duration::from_millis(2)));
        let phone: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        view.claimer()(phone, "60970");
        let to = listener.local_addr();
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = flooding.clone();
        let mirror = std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let sent = Packet {
                time: SystemTime::now(),
                src: phone,
                dst: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
                raw: b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec(),
            };
            let datagram = encode(&sent, 1).unwrap();
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while flood.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                let _ = socket.send_to(&datagram, to);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let finished = tokio::time::timeout(Duration::from_secs(3), view.finish()).await;
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        mirror.join().unwrap();
        let got = finished.expect("finish waited for the mirror to fall silent");
        assert!(!got.packets.is_empty());
    }

    /// A message as the server mirrored it, stamped `ms` after the epoch.
    fn mirrored(src: &str, dst: &str, raw: &[u8], ms: u64) -> Arrival {
        Ok(Mirrored {
            packet: Packet {
                time: std::time::UNIX_EPOCH + Duration::from_millis(ms),
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                transport: Transport::Udp,
                raw: raw.to_vec(),
            },
            capture_id: None,
            timestamped: true,
        })
    }

    const PHONE: &str = "127.0.0.1:7001";
    const CALLER: &str = "127.0.0.1:7002";
    const SERVER: &str = "127.0.0.1:5060";

    fn state() -> State {
        let mut st = State::default();
        st.who.insert(PHONE.parse().unwrap(), "60972".into());
        st.who.insert(CALLER.parse().unwrap(), "60970".into());
        st
    }

    fn request(method: &str, branch: &str, call_id: &str) -> Vec<u8> {
        crate::sip::build::Builder::request(method, "sip:60972@127.0.0.1:7001")
            .header(
                "Via",
                &format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"),
            )
            .header("From", "<sip:60970@sca.test>;tag=a")
            .header("To", "<sip:60972@sca.test>")
            .header("Call-ID", call_id)
            .header("CSeq", &format!("1 {method}"))
            .build()
    }

    fn lines(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.first_line()).collect()
    }

    /// Two server processes: a NOTIFY stamped first reaches us after a BYE
    /// stamped later. Within the reorder window they go out in the
    /// server's order.
    #[test]
    fn mirrored_messages_go_out_in_the_servers_order_after_a_short_wait() {
        let mut st = state();
        let t0 = Instant::now();
        let bye = request("BYE", "z9hG4bKb", "call");
        let notify = request("NOTIFY", "z9hG4bKn", "sub");
        assert!(st.take(mirrored(SERVER, PHONE, &bye, 2), t0).is_empty());
        assert!(st.take(mirrored(SERVER, PHONE, &notify, 1), t0).is_empty());
        assert_eq!(st.next_release(), Some(t0 + REORDER));
        assert!(
            st.release(t0 + REORDER / 2).is_empty(),
            "not before the window"
        );
        assert_eq!(
            lines(&st.release(t0 + REORDER)),
            [
                "NOTIFY sip:60972@127.0.0.1:7001 SIP/2.0",
                "BYE sip:60972@127.0.0.1:7001 SIP/2.0"
            ]
        );
        assert_eq!(st.next_release(), None);
    }

    /// A phone's 200 mirrored, and even stamped, before the Replaces INVITE
    /// it answers waits for that INVITE; the same INVITE on the proxy's
    /// other leg (same Call-ID and CSeq, another branch) does not count.
    #[test]
    fn an_answer_mirrored_before_its_request_waits_for_it() {
        let mut st = state();
        let t0 = Instant::now();
        let late = t0 + REORDER;
        let invite = request("INVITE", "z9hG4bKr", "replaces");
        let ok = crate::sip::build::Builder::response_to(
            &crate::sip::Message::parse(invite.clone()).unwrap(),
            200,
            Some("b"),
        )
        .build();
        let upstream = String::from_utf8(invite.clone())
            .unwrap()
            .replace("branch=z9hG4bKr", "branch=z9hG4bKupstream");
        st.take(mirrored(CALLER, SERVER, upstream.as_bytes(), 1), t0);
        assert_eq!(st.release(late).len(), 1);
        st.take(mirrored(PHONE, SERVER, &ok, 2), t0);
        assert!(st.release(late).is_empty());
        assert_eq!(
            st.view.packets.len(),
            1,
            "the 200 is not counted while it waits"
        );
        st.take(mirrored(SERVER, PHONE, &invite, 3), t0);
        let records = st.release(late);
        assert_eq!(
            lines(&records),
            ["INVITE sip:60972@127.0.0.1:7001 SIP/2.0", "SIP/2.0 200 OK"]
        );
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        // At the end, what waits goes out: messages in their window, then
        // an answer whose request never came.
        let stray = String::from_utf8(ok.clone())
            .unwrap()
            .replace("branch=z9hG4bKr", "branch=z9hG4bKlost");
        st.take(mirrored(PHONE, SERVER, stray.as_bytes(), 4), late);
        assert!(st.release(late).is_empty());
        st.take(
            mirrored(SERVER, PHONE, &request("BYE", "z9hG4bKb", "c"), 5),
            late,
        );
        assert_eq!(
            lines(&st.flush()),
            ["BYE sip:60972@127.0.0.1:7001 SIP/2.0", "SIP/2.0 200 OK"]
        );
        assert_eq!(st.view.packets.len(), 5);
    }

    #[test]
    fn the_servers_view_is_compared_with_the_phones_message_by_message() {
        let phone: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let who = BTreeMap::from([(phone, "60970".to_string())]);
        let packet = |raw: &str| Packet {
            time: SystemTime::now(),
            src: phone,
            dst: server,
            transport: Transport::Udp,
            raw: raw.as_bytes().to_vec(),
        };
        let phones: Vec<Record> = [
            "REGISTER a SIP/2.0",
            "SUBSCRIBE b SIP/2.0",
            "REGISTER a SIP/2.0",
        ]
        .iter()
        .flat_map(|m| packet(m).records_for(&who, 0))
        .collect();
        let to: SocketAddr = "127.0.0.1:9060".parse().unwrap();
        // One REGISTER of two and the SUBSCRIBE mirrored, and an OPTIONS
        // the phones never recorded.
        let view = ServerView {
            packets: [
                "REGISTER a SIP/2.0",
                "SUBSCRIBE b SIP/2.0",
                "OPTIONS c SIP/2.0",
            ]
            .iter()
            .map(|m| packet(m))
            .collect(),
            unclaimed: 2,
            skipped: BTreeMap::from([("not HEPv3", (1, "HEP version 2".to_string()))]),
        };
        let notes = view.compare(&phones, to).unwrap();
        assert_eq!(
            notes,
            [
                "HEP: the server mirrored 3 messages of this case to 127.0.0.1:9060; the phones recorded 3; datagrams skipped: 1 not HEPv3 (first: HEP version 2)",
                "HEP: 1 of the phones' messages were not mirrored (first: REGISTER a SIP/2.0)",
                "HEP: 1 mirrored messages the phones never recorded (first: OPTIONS c SIP/2.0)",
                "HEP: 2 mirrored messages of other parties were passed over",
            ]
        );
        let nothing = ServerView::default().compare(&phones, to).unwrap_err();
        assert!(
            nothing.contains(
                "no HEP from the server about this case reached 127.0.0.1:9060 (3 messages"
            ),
            "{nothing}"
        );
        // No phone messages, nothing mirrored: nothing to say against.
        assert!(ServerView::default().compare(&[], to).is_ok());
    }

    #[tokio::test]
    async fn a_view_keeps_its_phones_messages_and_counts_the_rest() {
        let listener = HepListener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let seen: Arc<Mutex<Vec<(String, Direction, String)>>> = Arc::default();
        let into = seen.clone();
        let view = HepView::start(&listener, move |r| {
            into.lock()
                .unwrap()
                .push((r.agent.clone(), r.direction, r.first_line()))
        });
        let phone: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        view.claimer()(phone, "60970");
        let packet = |src, dst, raw: &str| Packet {
            time: SystemTime::now(),
            src,
            dst,
            transport: Transport::Udp,
            raw: raw.as_bytes().to_vec(),
        };
        let mirror = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for datagram in [
            encode(&packet(phone, server, "REGISTER sip:sca.test SIP/2.0"), 1).unwrap(),
            encode(&packet(server, phone, "SIP/2.0 200 OK"), 1).unwrap(),
            // Another case's phone.
            encode(
                &packet("127.0.0.1:7999".parse().unwrap(), server, "BYE x"),
                1,
            )
            .unwrap(),
            b"HEP3garbage".to_vec(),
            b"\x02\x10\x02\x11".to_vec(),
            // The magic alone: HEPv3 cut short, not something else.
            b"HEP3".to_vec(),
        ] {
            mirror.send_to(&datagram, listener.local_addr()).unwrap();
        }
        assert_eq!(view.caught_up(2, Duration::from_secs(2)).await, 2);
        // The undecodable ones trail; finishing handles what has arrived.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = view.finish().await;
        assert_eq!(got.packets.len(), 2);
        assert_eq!(got.unclaimed, 1);
        assert_eq!(got.skipped["bad length"].0, 1);
        assert_eq!(got.skipped["not HEPv3"].0, 1);
        assert_eq!(got.skipped["truncated HEPv3"].0, 1);
        assert!(!got.skipped.contains_key("not HEP"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (
                    "60970".into(),
                    Direction::Sent,
                    "REGISTER sip:sca.test SIP/2.0".into()
                ),
                ("60970".into(), Direction::Received, "SIP/2.0 200 OK".into()),
            ]
        );
    }
}
