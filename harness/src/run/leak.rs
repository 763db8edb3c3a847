//! The live half of the leak check ([`crate::leak`]): after the teardown,
//! every shared-line phone of the case subscribes afresh and reads its
//! first NOTIFY, and the profile's state command reads the server's own
//! state of the line. Every wait has a deadline; what could not be read is
//! an error (the case is then inconclusive), never an idle line.

use std::time::Duration;

use crate::leak;
use crate::model::Channel;
use crate::observation::{Observability, Observation};
use crate::sip::transport::Recorder;
use crate::target::Profile;
use crate::topology::Topology;

use super::live::{command, Live};

/// What the leak check saw: the leftovers as events, what it could see,
/// and why a part of it could not be read.
pub(super) struct Leftovers {
    pub observed: Vec<Observation>,
    pub seen: Observability,
    pub errors: Vec<String>,
}

/// How long after a teardown something may still be held before it is a
/// leak, and how often the line is read again meanwhile.
const LINGER: Duration = Duration::from_secs(2);
const AGAIN: Duration = Duration::from_millis(200);

/// Probes the line of a case that has been torn down. A server finishes
/// the teardown's requests on its own time (a seizure released a few ms
/// after its unsubscribe was answered), so a line that shows something
/// held is read again until it is idle or [`LINGER`] has passed: what is
/// still held then is what the case left behind.
pub(super) async fn probe(
    live: &Live,
    topology: &Topology,
    profile: Option<&Profile>,
    recorder: &Recorder,
    deadline: Duration,
) -> Leftovers {
    let until = tokio::time::Instant::now() + LINGER;
    loop {
        let left = probe_once(live, topology, profile, recorder, deadline).await;
        if left.observed.is_empty()
            || !left.errors.is_empty()
            || tokio::time::Instant::now() >= until
        {
            return left;
        }
        tokio::time::sleep(AGAIN).await;
    }
}

async fn probe_once(
    live: &Live,
    topology: &Topology,
    profile: Option<&Profile>,
    recorder: &Recorder,
    deadline: Duration,
) -> Leftovers {
    let mut observed = Vec::new();
    let mut errors = Vec::new();
    let mut channels = Vec::new();
    let mut ways = Vec::new();
    let dn_of_user = live.line.reported_dn(topology);
    let mut probes = Vec::new();
    let from = recorder.len();
    for agent in &live.agents {
        let Some(l) = topology.line_of(agent.dn()) else {
            continue;
        };
        let number = live.line.user(&l.number).to_string();
        match agent.act(move |a| a.probe_call_info(&number)).await {
            Ok(call_id) => probes.push((agent, call_id)),
            Err(e) => errors.push(format!("leak check: {e}")),
        }
    }
    if !probes.is_empty() {
        ways.push("a fresh call-info SUBSCRIBE from each of the line's phones");
    }
    for (agent, call_id) in probes {
        let dn = agent.dn().to_string();
        // Its own subscription's NOTIFY: a shared server also notifies
        // the phone's earlier, ended one (Kamailio does), which says
        // nothing of now.
        let notify_of = || {
            recorder.find_since(from, |r| {
                leak::probe_notify(r, &dn, &call_id).map(|m| (m, r.raw.clone()))
            })
        };
        // Received, and handled by the phone.
        let told = agent
            .wait_for(
                "the first NOTIFY of its leak-check subscription",
                deadline,
                |s| s.notified_in.as_deref() == Some(call_id.as_str()),
            )
            .await;
        match (told, notify_of()) {
            (_, Some((msg, raw))) => {
                let raw = String::from_utf8_lossy(&raw).into_owned();
                match leak::busy(&dn, &msg, &raw, &dn_of_user) {
                    Ok(busy) => {
                        observed.extend(busy);
                        channels.push(Channel::Wire(dn.clone()));
                    }
                    Err(e) => errors.push(format!("leak check: {dn}: {e}")),
                }
            }
            (told, None) => errors.push(format!(
                "leak check: {}",
                told.err().map_or_else(
                    || format!("{dn}: no NOTIFY of its leak-check subscription"),
                    |e| e.to_string()
                )
            )),
        }
        // Its answer is part of the case's SIP (and of a server's mirror).
        if agent.act(|a| a.end_probe()).await.unwrap_or(false) {
            let _ = agent
                .wait_for("the answer to its leak-check unsubscribe", deadline, |s| {
                    !s.subscribed
                })
                .await;
        } else {
            errors.push(format!(
                "leak check: {dn} had no established subscription to end"
            ));
        }
    }
    if let Some((_, state)) =
        profile.and_then(|p| p.line_command(|c| &c.state, &live.line, topology))
    {
        ways.push("the profile's line state command");
        match command(&state).await {
            Ok(out) => match leak::server_state(&out, &live.line, topology) {
                Ok(found) => {
                    observed.extend(found);
                    channels.push(Channel::Dn(leak::SERVER.into()));
                }
                Err(e) => errors.push(format!("leak check: {e}")),
            },
            Err(e) => errors.push(format!("leak check: {e}")),
        }
    }
    let mut seen = Observability::everything(&format!("the leak check: {}", ways.join(", and ")));
    seen.channels = Some(channels);
    Leftovers {
        observed,
        seen,
        errors,
    }
}
