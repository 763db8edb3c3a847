//! The steps of a case: each waits (with a deadline) for the state it
//! needs, then one phone acts. The steps of a stage marked `together` are
//! made ready one by one and then fired at once, each phone in its own
//! task, so that the server receives them closer together than it could
//! answer the first (a race).

use std::time::Duration;

use crate::case::{Action, Index, Step};
use crate::topology::Topology;
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
    settle(agent.act(act).await)
}

/// Carries out steps at once: each waits for what it needs in turn, then
/// every phone is given its order before any is awaited. The first step
/// that cannot be made ready or carried out is the error (the others that
/// were fired still act).
pub(super) async fn perform_together(
    live: &Live,
    topology: &Topology,
    steps: &[Step],
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
    let mut fired = Vec::new();
    for (n, Armed { agent, act }) in armed.into_iter().enumerate() {
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
/// of the 2xx sent again, so that the stage compares what the server did
/// after it. The error says what never came.
pub(super) async fn finish(
    live: &Live,
    steps: &[Step],
    deadline: Duration,
) -> Result<(), (usize, String)> {
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
    Ok(())
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
        Action::LoseAck => (
            None,
            Box::new(|a| {
                a.lose_ack();
                Ok(())
            }),
        ),
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
