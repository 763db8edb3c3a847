//! The steps of a case: each waits (with a deadline) for the state it
//! needs, then one phone acts. The steps of a stage marked `together` are
//! made ready one by one and then fired at once, each phone in its own
//! task, so that the server receives them closer together than it could
//! answer the first (a race).

use std::time::Duration;

use crate::case::{Action, Index, Step};
use crate::topology::Topology;
use tokio::sync::watch;

use crate::ua::{Agent, AgentHandle, CallDirection, LostAck, Phase, ScriptError, Seizure, Status};

use super::live::Live;

type Act = Box<dyn FnOnce(&mut Agent) -> Result<(), ScriptError> + Send>;

/// A step whose phone is ready for it: what is left is to act.
struct Armed<'a> {
    agent: &'a AgentHandle,
    act: Act,
}

/// Carries out one step, first waiting (with a deadline) for the state it
/// needs: a phone can only answer once an INVITE has reached it.
pub(super) async fn perform(
    live: &Live,
    topology: &Topology,
    step: &Step,
    deadline: Duration,
) -> Result<(), String> {
    let Armed { agent, act } = arm(live, topology, step, deadline).await?;
    settle(agent.act(act).await)?;
    if step.action == Action::CloseConnection {
        closed(agent, deadline).await?;
    }
    Ok(())
}

/// Waits for the phone's edge to have closed its connections; none to
/// close is an error (the step would prove nothing).
async fn closed(agent: &AgentHandle, deadline: Duration) -> Result<(), String> {
    agent
        .wait_for("its connections closed", deadline, |st| {
            st.closed_connections.is_some()
        })
        .await
        .map_err(|e| e.to_string())?;
    match agent.status().closed_connections {
        Some(0) => Err(format!("{} had no connection open to close", agent.dn())),
        _ => Ok(()),
    }
}

/// Carries out steps at once: each waits for what it needs in turn, then
/// every phone is given its order before any is awaited, `stagger` apart
/// if the case says so. The phones of the race read nothing from the
/// moment the first is about to act until each has acted (their reading is
/// held, [`AgentHandle::hold_reading`], at most until `deadline`): what the
/// server sends after the first action (the CANCEL provoked by the first
/// answer) crosses the others on the wire, as between real phones, and
/// cannot make a phone lose its turn. The first step that cannot be made
/// ready or carried out is the error (the others that were fired still
/// act).
pub(super) async fn perform_together(
    live: &Live,
    topology: &Topology,
    steps: &[Step],
    stagger: Option<Duration>,
    deadline: Duration,
) -> Result<(), (usize, String)> {
    let mut armed = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        armed.push(
            arm(live, topology, step, deadline)
                .await
                .map_err(|e| (n, e))?,
        );
    }
    let until = std::time::Instant::now() + deadline;
    for Armed { agent, .. } in &armed {
        agent.hold_reading(until);
    }
    let mut fired = Vec::new();
    for (n, Armed { agent, act }) in armed.into_iter().enumerate() {
        if let (Some(gap), true) = (stagger, n > 0) {
            tokio::time::sleep(gap).await;
        }
        let act = move |a: &mut Agent| a.together(act);
        fired.push((n, agent.order(act).map_err(|e| (n, e.to_string()))?));
    }
    let mut first = Ok(());
    for (n, pending) in fired {
        if let (Err(e), Ok(())) = (settle(pending.await), &first) {
            first = Err((n, e));
        }
    }
    first
}

/// Waits (with a deadline) until the armed steps of a stage whose
/// consequence is part of it have had it: a lost ACK made good by the ACK
/// of the 2xx sent again, and a race of answers settled (one phone in the
/// call, every other one's dialog ended), so that the stage compares what
/// the server did after it. An error is a step that could not be waited
/// for; what never came is returned as the stage's problems: a server that
/// leaves a losing phone in its call is found, not waited on.
pub(super) async fn finish(
    live: &Live,
    steps: &[Step],
    together: bool,
    deadline: Duration,
) -> Result<Vec<String>, (usize, String)> {
    let mut problems = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        if step.action == Action::LoseAck {
            let agent = live.agent(&step.actor).map_err(|e| (n, e))?;
            agent
                .wait_for(
                    "the 2xx sent again after its ACK was lost, and its ACK",
                    deadline,
                    |st| st.lost_ack == Some(LostAck::Resent),
                )
                .await
                .map_err(|e| (n, e.to_string()))?;
        }
    }
    let answers = steps.iter().all(|s| s.action == Action::Answer);
    if together && answers {
        let agents = steps
            .iter()
            .enumerate()
            .map(|(n, s)| live.agent(&s.actor).map_err(|e| (n, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let dns: Vec<&str> = agents.iter().map(|a| a.dn()).collect();
        let mut watches: Vec<_> = agents.iter().map(|a| a.watch()).collect();
        let settled = tokio::time::timeout(deadline, async {
            loop {
                let phases = answer_phases(&dns, &mut watches);
                if answer_race(&phases).is_ok() {
                    return;
                }
                any_changed(&mut watches).await;
            }
        })
        .await;
        if settled.is_err() {
            if let Err(why) = answer_race(&answer_phases(&dns, &mut watches)) {
                problems.push(format!(
                    "answer race not settled {deadline:?} after the answers: {why}"
                ));
            }
        }
    }
    Ok(problems)
}

/// Waits (at most `deadline`, for all phones together) until no phone
/// holds a 2xx that still waits for its ACK. The ACK is due, and what it
/// derives (the answering phone's EventEstablished) belongs to the stage
/// whose step the 2xx answered: a 50 ms quiet settle alone put it in the
/// next stage whenever the server was slower to forward the ACK (over
/// TLS with digest authentication, say). Returns, in words, each phone
/// whose ACK did not come: a note, since the stage's comparison shows
/// what the missing ACK cost.
pub(super) async fn acks_due(live: &Live, deadline: Duration) -> Vec<String> {
    let unacked = |st: &Status| st.calls.iter().any(|c| c.ack_due());
    let end = tokio::time::Instant::now() + deadline;
    let mut missing = Vec::new();
    for a in &live.agents {
        if !unacked(&a.status()) {
            continue;
        }
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if a.wait_for("the ACK of its 2xx", left, |st| !unacked(st))
            .await
            .is_err()
        {
            missing.push(format!(
                "{}'s 2xx had no ACK {deadline:?} after the stage's expected events",
                a.dn()
            ));
        }
    }
    missing
}

/// Each racing phone's DN with the phase of its latest incoming call.
fn answer_phases(
    dns: &[&str],
    watches: &mut [watch::Receiver<Status>],
) -> Vec<(String, Option<Phase>)> {
    dns.iter()
        .zip(watches.iter_mut())
        .map(|(dn, w)| {
            let st = w.borrow_and_update();
            let phase = st
                .call(|c| c.direction == CallDirection::Incoming)
                .map(|c| c.phase.clone());
            (dn.to_string(), phase)
        })
        .collect()
}

/// Returns once any of `watches` has a new status (never, if every agent
/// has stopped: the caller's deadline ends the wait).
fn any_changed<'a>(
    watches: &'a mut [watch::Receiver<Status>],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let Some((first, rest)) = watches.split_first_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            changed = first.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await
                }
            }
            () = any_changed(rest) => {}
        }
    })
}

/// Is a race of answers settled: exactly one phone in the call and every
/// other one's call ended? If not, where each phone is, in words.
fn answer_race(phases: &[(String, Option<Phase>)]) -> Result<(), String> {
    let in_call = phases
        .iter()
        .filter(|(_, p)| *p == Some(Phase::Confirmed))
        .count();
    let ended = phases
        .iter()
        .filter(|(_, p)| matches!(p, Some(Phase::Ended(_))))
        .count();
    if in_call == 1 && in_call + ended == phases.len() {
        return Ok(());
    }
    let words: Vec<String> = phases
        .iter()
        .map(|(dn, p)| {
            let at = match p {
                Some(Phase::Confirmed) => "in the call".to_string(),
                Some(Phase::Connecting) => "answered, no ACK".to_string(),
                Some(Phase::Ringing) => "still ringing".to_string(),
                Some(Phase::Ended(end)) => format!("its call ended ({end:?})"),
                Some(p) => format!("{p:?}"),
                None => "no incoming call".to_string(),
            };
            format!("{dn} {at}")
        })
        .collect();
    Err(words.join(", "))
}

fn settle(acted: Result<Result<(), ScriptError>, crate::ua::UaError>) -> Result<(), String> {
    acted.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// Waits (with a deadline) for what `step` needs, and returns its act.
async fn arm<'a>(
    live: &'a Live,
    topology: &Topology,
    step: &Step,
    deadline: Duration,
) -> Result<Armed<'a>, String> {
    type Ready = Box<dyn Fn(&Status) -> bool + Send + Sync>;
    let agent = live.agent(&step.actor)?;
    // The case names DNs; the phones dial their line's SIP users.
    let line = topology
        .line_of(&step.actor)
        .map(|l| live.line.user(&l.number).to_string())
        .unwrap_or_default();
    let phase = |p: Phase| -> Ready { Box::new(move |st| st.call(|c| c.phase == p).is_some()) };
    // What the step needs first (with what to call it in a timeout), and
    // what it does.
    let (needs, act): (Option<(&str, Ready)>, Act) = match step.action.clone() {
        Action::Call { to } => {
            let to = live.line.user(&to).to_string();
            (
                // A call after a seizure must know whether it was granted.
                Some((
                    "the line-seize answer",
                    Box::new(|st| !matches!(st.seizure, Some(Seizure::Pending(_)))),
                )),
                Box::new(move |a| {
                    a.invite(&to);
                    Ok(())
                }),
            )
        }
        Action::Answer => (
            Some(("an incoming call to ring", phase(Phase::Ringing))),
            Box::new(|a| a.answer()),
        ),
        Action::Refuse { code } => (
            Some(("an incoming call to ring", phase(Phase::Ringing))),
            Box::new(move |a| a.refuse(code)),
        ),
        Action::Hangup => (
            Some(("an established call", phase(Phase::Confirmed))),
            Box::new(|a| a.hangup()),
        ),
        Action::Cancel => (
            Some((
                "an unanswered outgoing call",
                Box::new(|st| {
                    st.call(|c| {
                        c.direction == CallDirection::Outgoing
                            && matches!(c.phase, Phase::Calling | Phase::Early)
                    })
                    .is_some()
                }),
            )),
            Box::new(|a| a.cancel()),
        ),
        Action::Seize { index, expires } => (
            None,
            Box::new(move |a| {
                a.seize(&line, index, expires);
                Ok(())
            }),
        ),
        Action::Release => (
            Some((
                "a granted seizure",
                Box::new(|st| matches!(st.seizure, Some(Seizure::Granted(_)))),
            )),
            Box::new(|a| {
                a.unseize();
                Ok(())
            }),
        ),
        Action::Hold { private, style } => (
            Some(("an established call", phase(Phase::Confirmed))),
            Box::new(move |a| a.hold(private, style)),
        ),
        Action::Retrieve { index } | Action::Barge { index } => match index {
            Index::Number(index) => (
                None,
                Box::new(move |a| {
                    a.join_appearance(&line, index);
                    Ok(())
                }),
            ),
            // The appearance the line told the phone is in that state,
            // whichever number the server gave it.
            Index::Told(state) => (
                Some((
                    "the line to tell it an appearance in the state the step names",
                    Box::new(move |st| st.told.iter().any(|(_, s)| *s == state)),
                )),
                Box::new(move |a| {
                    let told = a.status().told;
                    let Some(&(index, _)) = told.iter().find(|(_, s)| *s == state) else {
                        return Err(ScriptError {
                            dn: a.config().dn.clone(),
                            action: "join an appearance",
                            why: format!("the line told it no appearance is {state}"),
                        });
                    };
                    a.join_appearance(&line, index);
                    Ok(())
                }),
            ),
        },
        Action::RefuseNotify => (
            Some((
                "an accepted call-info subscription",
                Box::new(|st| st.subscribed),
            )),
            Box::new(|a| {
                a.refuse_notifies();
                Ok(())
            }),
        ),
        Action::CloseConnection => (
            Some((
                "an accepted call-info subscription",
                Box::new(|st| st.subscribed),
            )),
            Box::new(|a| {
                if a.config().transport == crate::sip::Transport::Udp {
                    return Err(ScriptError {
                        dn: a.config().dn.clone(),
                        action: "close its connections",
                        why: "over UDP there is no connection to close (the case names its transports)".into(),
                    });
                }
                a.close_connections();
                Ok(())
            }),
        ),
        Action::LoseAck => (
            None,
            Box::new(|a| {
                a.lose_ack();
                Ok(())
            }),
        ),
        Action::Reroute => {
            // Subscribed first, then the old relay goes: from then on what
            // the server sends by the old route is lost.
            agent
                .wait_for("an accepted call-info subscription", deadline, |st| {
                    st.subscribed
                })
                .await
                .map_err(|e| e.to_string())?;
            let to = live.reroute(&step.actor).await?;
            (
                None,
                Box::new(move |a| {
                    a.reroute(to, &line);
                    Ok(())
                }),
            )
        }
        Action::Resubscribe => (
            Some((
                "an accepted call-info subscription",
                Box::new(|st| st.subscribed),
            )),
            Box::new(move |a| {
                a.resubscribe(&line);
                Ok(())
            }),
        ),
        action @ (Action::Refresh | Action::Unsubscribe) => {
            let expires = if action == Action::Refresh { 3600 } else { 0 };
            (
                Some((
                    "an accepted call-info subscription",
                    Box::new(|st| st.subscribed),
                )),
                Box::new(move |a| a.refresh_call_info(expires)),
            )
        }
    };
    if let Some((what, ready)) = needs {
        agent
            .wait_for(what, deadline, ready)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Armed { agent, act })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ua::End;

    #[test]
    fn an_answer_race_is_settled_with_one_phone_in_the_call_and_the_rest_out() {
        let race = |a: Option<Phase>, b: Option<Phase>| {
            answer_race(&[("60970".into(), a), ("60970_2".into(), b)])
        };
        assert!(race(Some(Phase::Confirmed), Some(Phase::Ended(End::ByePeer))).is_ok());
        assert!(race(Some(Phase::Ended(End::ByePeer)), Some(Phase::Confirmed)).is_ok());
        let both = race(Some(Phase::Confirmed), Some(Phase::Confirmed)).unwrap_err();
        assert_eq!(both, "60970 in the call, 60970_2 in the call");
        let waiting = race(Some(Phase::Confirmed), Some(Phase::Connecting)).unwrap_err();
        assert!(waiting.contains("60970_2 answered, no ACK"), "{waiting}");
        assert!(race(
            Some(Phase::Ended(End::ByePeer)),
            Some(Phase::Ended(End::ByePeer))
        )
        .is_err());
        assert!(race(Some(Phase::Confirmed), None).is_err());
    }
}
