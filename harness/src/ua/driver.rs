//! The async edge of a user agent: one task owns the [`Agent`] and its
//! [`Endpoint`]; the script talks to it through an [`AgentHandle`].

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::agent::{Agent, AgentConfig, ScriptError, Status};
use crate::sip::retransmit::Retransmitter;
use crate::sip::transport::{sleep_until, Endpoint, Gate};
use crate::sip::{Message, Transport};

type Command = Box<dyn FnOnce(&mut Agent) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("{dn}: timed out after {after:?} waiting for {what}")]
    Timeout {
        dn: String,
        what: String,
        after: Duration,
    },
    /// A challenge the phone could not answer (the status says which).
    #[error("{0}")]
    Auth(String),
    #[error("{dn}: the user agent has stopped")]
    Stopped { dn: String },
}

/// The script's side of a running user agent. Dropping it stops the agent.
pub struct AgentHandle {
    dn: String,
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    task: AbortHandle,
    gate: Gate,
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentHandle {
    /// Starts an agent on an already bound endpoint.
    pub fn start(
        endpoint: Endpoint,
        mut inbound: mpsc::UnboundedReceiver<crate::sip::record::Inbound>,
        cfg: AgentConfig,
    ) -> AgentHandle {
        let dn = cfg.dn.clone();
        let (transport, t1) = (cfg.transport, cfg.t1);
        let mut agent = Agent::new(cfg);
        let (status_tx, status) = watch::channel(agent.status());
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        // Over UDP a lost message is sent again (RFC 3261's timers); the
        // transport layer of TCP does that itself, except for a 2xx to an
        // INVITE, which is retransmitted end to end until its ACK.
        let mut retransmit = match transport {
            Transport::Udp => Retransmitter::new(t1),
            _ => Retransmitter::new(t1).answers_only(),
        };
        let gate = endpoint.gate();
        let task = tokio::spawn(async move {
            loop {
                let due = retransmit.poll_timeout();
                // A command before a message that arrived meanwhile: a
                // race's phone acts on what it knew when it was told to.
                tokio::select! {
                    biased;
                    cmd = command_rx.recv() => match cmd {
                        Some(cmd) => cmd(&mut agent),
                        None => break,
                    },
                    Some(msg) = inbound.recv() => {
                        retransmit.received(&msg.msg, Instant::now());
                        agent.handle(&msg)
                    }
                    _ = sleep_until(due) => {
                        for (to, bytes) in retransmit.poll_transmit(Instant::now()) {
                            if let Err(e) = endpoint.send(transport, to, bytes).await {
                                agent.note(e.to_string());
                            }
                        }
                    }
                }
                while let Some(t) = agent.poll_transmit() {
                    if let Ok(msg) = Message::parse(t.bytes.clone()) {
                        retransmit.sent(&msg, t.to, Instant::now());
                    }
                    if let Err(e) = endpoint.send(transport, t.to, t.bytes).await {
                        agent.note(e.to_string());
                    }
                }
                // After what it had to send: a phone that closes its
                // connections has sent what it meant to first.
                if agent.take_closing() {
                    let (closed, late) = endpoint.close_streams().await;
                    if late > 0 {
                        agent.note(format!(
                            "the server did not close its side of {late} of the {closed} connections the phone closed within {:?} (cut off then)",
                            crate::sip::transport::CLOSE_DEADLINE
                        ));
                    }
                    agent.connections_closed(closed);
                }
                // A race's step is on its way: the phone may read again.
                if agent.take_step_taken() {
                    endpoint.gate().hold(None);
                }
                status_tx.send_replace(agent.status());
            }
        });
        AgentHandle {
            dn,
            commands,
            status,
            task: task.abort_handle(),
            gate,
        }
    }

    /// Holds the phone's reading ([`Gate`]) until it takes a race's step
    /// ([`Agent::together`]) or until `until`, whichever comes first.
    pub fn hold_reading(&self, until: Instant) {
        self.gate.hold(Some(until));
    }

    pub fn dn(&self) -> &str {
        &self.dn
    }

    /// Runs `f` on the agent (in its task) and returns its result.
    pub async fn act<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Agent) -> T + Send + 'static,
    ) -> Result<T, UaError> {
        self.order(f)?.await
    }

    /// Hands `f` to the agent's task at once, before anything is awaited,
    /// and returns what waits for its result: several phones given orders
    /// back to back act concurrently (a race of two seizures), each in its
    /// own task.
    pub fn order<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Agent) -> T + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T, UaError>> + '_, UaError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |a: &mut Agent| {
                let _ = tx.send(f(a));
            }))
            .map_err(|_| self.stopped())?;
        Ok(async move { rx.await.map_err(|_| self.stopped()) })
    }

    fn stopped(&self) -> UaError {
        UaError::Stopped {
            dn: self.dn.clone(),
        }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The agent's status as it changes (to wait on several agents).
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until `pred` holds for the agent's status, at most `deadline`.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Result<(), UaError> {
        let mut rx = self.status.clone();
        let timeout = UaError::Timeout {
            dn: self.dn.clone(),
            what: what.to_string(),
            after: deadline,
        };
        // A phone that failed to authenticate will not get any further:
        // every wait ends at once with why.
        let outcome = tokio::time::timeout(
            deadline,
            rx.wait_for(|s| s.auth_failed.is_some() || pred(s)),
        )
        .await
        .map(|r| r.is_ok());
        if let Some(why) = self.status.borrow().auth_failed.clone() {
            return Err(UaError::Auth(why));
        }
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.stopped()),
            Err(_) => Err(timeout),
        }
    }
}
