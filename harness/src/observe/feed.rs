//! The JSON-lines event feed: how the embedded server, and a bridge on any
//! other server, deliver T-Library events to scacheck. One event a line:
//! the golden form of the event plus `seq` and `channel` (docs/event-feed.md).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::EventLog;
use crate::model::{Channel, Event, Strictness};
use crate::observation::Observation;

pub const CHANNEL_KEY: &str = "channel";
pub const SEQ_KEY: &str = "seq";
/// Longest feed line we read; longer is a broken or hostile feed.
pub const MAX_LINE: usize = 64 * 1024;

/// One feed line for `event` on `channel`.
pub fn encode(seq: u64, channel: &Channel, event: &Event) -> String {
    let body = event.to_json_line();
    let channel = serde_json::Value::String(channel.to_string());
    format!(
        "{{\"{SEQ_KEY}\": {seq}, \"{CHANNEL_KEY}\": {channel}, {}",
        &body[1..]
    )
}

/// The key of the line that ends a feed's backlog: `{"live": N}`, N the
/// number of events before it (docs/event-feed.md).
pub const LIVE_KEY: &str = "live";

/// The line that ends the backlog of `n` events.
pub fn live_line(n: usize) -> String {
    format!("{{\"{LIVE_KEY}\": {n}}}")
}

/// Whether a line is the end of the backlog.
fn is_live(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.len() == 1 && o.contains_key(LIVE_KEY))
        })
        .unwrap_or(false)
}

/// Reads one feed line. Unknown event names are kept; unknown attributes
/// are returned so the report can say what was ignored.
pub fn decode(line: &str) -> Result<(Channel, Event, Vec<String>), String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = json.as_object().ok_or("not a JSON object")?;
    let channel = match obj.get(CHANNEL_KEY) {
        Some(serde_json::Value::String(c)) if !c.is_empty() => Channel::parse(c),
        _ => return Err(format!("missing or empty \"{CHANNEL_KEY}\"")),
    };
    let (event, ignored) = Event::from_json(obj, Strictness::Lenient, &[CHANNEL_KEY, SEQ_KEY])?;
    Ok((channel, event, ignored))
}

/// A connected feed reader; dropping it stops reading.
pub struct FeedClient {
    task: AbortHandle,
}

impl Drop for FeedClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FeedClient {
    /// Connects to a feed and appends to `log` what it delivers after its
    /// backlog: a shared server's feed starts with every event since it
    /// started, other cases' included, and a case's events are the ones
    /// that come after it connected. Returns once the backlog has ended
    /// (the `live` line), or an error if it does not within `deadline`.
    pub async fn connect(
        addr: SocketAddr,
        deadline: Duration,
        log: EventLog,
    ) -> Result<FeedClient, String> {
        let stream = tokio::time::timeout(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("event feed at {addr}: no connection within {deadline:?}"))?
            .map_err(|e| format!("event feed at {addr}: {e}"))?;
        let (live_tx, live_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            let mut live_tx = Some(live_tx);
            loop {
                buf.clear();
                match (&mut reader)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) if buf.len() > MAX_LINE => {
                        log.problem(format!(
                            "feed line longer than {MAX_LINE} bytes; feed dropped"
                        ));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log.problem(format!("feed read error: {e}"));
                        break;
                    }
                }
                let line = String::from_utf8_lossy(&buf).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                if live_tx.is_some() {
                    // The backlog: not this case's.
                    if is_live(&line) {
                        let _ = live_tx.take().map(|tx| tx.send(()));
                    }
                    continue;
                }
                match decode(&line) {
                    Ok((channel, event, ignored)) => {
                        if !ignored.is_empty() {
                            log.problem(format!(
                                "feed attributes not in the model, ignored: {} in {line}",
                                ignored.join(", ")
                            ));
                        }
                        log.push(Observation {
                            channel,
                            event,
                            raw: line,
                            within: None,
                            record: None,
                        });
                    }
                    Err(e) => log.problem(format!("unreadable feed line ({e}): {line}")),
                }
            }
        });
        let client = FeedClient {
            task: task.abort_handle(),
        };
        match tokio::time::timeout(deadline, live_rx).await {
            Ok(Ok(())) => Ok(client),
            _ => Err(format!(
                "event feed at {addr}: no {{\"{LIVE_KEY}\": N}} line ending its backlog within {deadline:?} (docs/event-feed.md)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attr, KnownEvent, Value};

    #[test]
    fn encode_decode_round_trip() {
        let ev = Event::new(KnownEvent::Ringing)
            .with(Attr::ConnId, Value::Id("006e".into()))
            .with(Attr::AppearanceIndex, Value::Int(1));
        let line = encode(7, &Channel::Dn("60970_2".into()), &ev);
        assert!(
            line.starts_with(r#"{"seq": 7, "channel": "60970_2", "event": "EventRinging""#),
            "{line}"
        );
        let (ch, back, ignored) = decode(&line).unwrap();
        assert_eq!(
            (ch, back, ignored.len()),
            (Channel::Dn("60970_2".into()), ev, 0)
        );
    }

    #[test]
    fn the_live_line_ends_the_backlog() {
        assert!(is_live(&live_line(0)));
        assert!(is_live(r#"{"live": 12}"#));
        assert!(!is_live(r#"{"live": 1, "channel": "60970"}"#));
        assert!(!is_live("live"));
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        for line in [
            "",
            "[]",
            "{}",
            r#"{"channel": "m"}"#,
            r#"{"channel": "", "event": "EventRinging"}"#,
            r#"{"channel": "x", "event": "EventRinging", "CallState": 5}"#,
        ] {
            assert!(decode(line).is_err(), "{line}");
        }
    }
}
