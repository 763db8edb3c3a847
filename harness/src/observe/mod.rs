//! Event sources: each turns what it can see (a server's event feed, its
//! logs, its HEP mirror) into events of the one model, in arrival order,
//! and declares what it can observe so that the diff compares only that.
//! What they deliver is [`crate::observation`]'s; the events derived from
//! SIP come from [`crate::derive`], which a source may feed but which never
//! imports a source.

pub mod feed;
pub mod hep;
pub mod tlib_log;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::observation::Observation;

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Observation>,
    problems: Vec<String>,
}

/// The events a source has delivered so far, shared between the source's
/// reader task and the run that waits on them.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<usize>,
    /// What this handle does to an event before it is kept (`None`: drop
    /// it); see [`EventLog::mapped`].
    map: Option<Map>,
}

type Map = Arc<Mutex<dyn FnMut(Observation) -> Vec<Observation> + Send>>;

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("inner", &self.inner)
            .field("mapped", &self.map.is_some())
            .finish()
    }
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Arc::default(),
            changed: watch::channel(0).0,
            map: None,
        }
    }
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle on the same log whose pushes go through `map` first (what
    /// it returns is kept, in order): a shared server's source reports
    /// every line's events in its SIP users, and a case keeps only its own
    /// line's, in DNs ([`crate::line::Localizer`]).
    pub fn mapped(
        &self,
        map: impl FnMut(Observation) -> Vec<Observation> + Send + 'static,
    ) -> EventLog {
        EventLog {
            map: Some(Arc::new(Mutex::new(map))),
            ..self.clone()
        }
    }

    pub fn push(&self, obs: Observation) {
        match &self.map {
            Some(map) => {
                let kept = (map.lock().unwrap_or_else(|p| p.into_inner()))(obs);
                for obs in kept {
                    self.keep(obs);
                }
            }
            None => self.keep(obs),
        }
    }

    fn keep(&self, obs: Observation) {
        let n = {
            let mut inner = self.lock();
            inner.events.push(obs);
            inner.events.len()
        };
        self.changed.send_replace(n);
    }

    /// Something the source delivered that is not a usable event.
    pub fn problem(&self, what: String) {
        self.lock().problems.push(what);
        self.changed.send_modify(|_| {});
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events from position `from` on.
    pub fn since(&self, from: usize) -> Vec<Observation> {
        self.lock()
            .events
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    /// Waits until `done` holds for the events since `from`, or `deadline`
    /// passes. Returns whether it held.
    pub async fn wait_for(
        &self,
        from: usize,
        deadline: Duration,
        done: impl Fn(&[Observation]) -> bool,
    ) -> bool {
        let mut rx = self.changed.subscribe();
        let check = |_: &usize| done(self.lock().events.get(from..).unwrap_or_default());
        tokio::time::timeout(deadline, rx.wait_for(check))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until no event has arrived for `quiet`, at most `deadline`.
    pub async fn settle(&self, quiet: Duration, deadline: Duration) {
        let mut rx = self.changed.subscribe();
        let _ = tokio::time::timeout(deadline, async {
            while tokio::time::timeout(quiet, rx.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {}
        })
        .await;
    }
}
