//! The target's pool of lines: a running case holds one line, and no other
//! case gets it until it is given back clean. A line whose case left
//! something behind is cleaned with the profile's clean command and read
//! again with its state command; one that cannot be shown clean is kept
//! out of the pool for the rest of the run (and the cases still waiting
//! for a line are told so when none is left).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::line::Identities;
use crate::outcome::CaseResult;
use crate::target::Profile;
use crate::topology::Topology;

/// A shared handle on the pool.
#[derive(Clone)]
pub(super) struct Lines {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    returned: Notify,
    kind: Kind,
}

enum Kind {
    /// A profile's pool of lines on one server.
    Shared { size: usize, profile: Arc<Profile> },
    /// Every case gets this line (the embedded target: a server per case).
    PerCase(Identities),
}

#[derive(Default)]
struct State {
    free: VecDeque<Identities>,
    /// Lines held by running cases.
    out: usize,
    /// Lines kept out of the pool, and why.
    dirty: Vec<String>,
}

impl Lines {
    /// The profile's lines, every one free.
    pub(super) fn new(profile: Arc<Profile>) -> Lines {
        Lines::with(
            profile.lines.iter().cloned().collect(),
            Kind::Shared {
                size: profile.lines.len(),
                profile,
            },
        )
    }

    pub(super) fn per_case(line: Identities) -> Lines {
        Lines::with(VecDeque::new(), Kind::PerCase(line))
    }

    fn with(free: VecDeque<Identities>, kind: Kind) -> Lines {
        Lines {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    free,
                    ..State::default()
                }),
                returned: Notify::new(),
                kind,
            }),
        }
    }

    /// How many lines the pool has (`None`: as many as there are cases).
    pub(super) fn size(&self) -> Option<usize> {
        match &self.inner.kind {
            Kind::Shared { size, .. } => Some(*size),
            Kind::PerCase(_) => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free line for the `nth` case of the run: line `nth` of the pool
    /// (counting round it) when it is free, so that which case runs on
    /// which line does not depend on timing or `--jobs` while there are
    /// lines enough, else the first freed. Waits while every line is held;
    /// an error when no line is left that could ever be free.
    pub(super) async fn take(&self, nth: usize) -> Result<Identities, String> {
        let size = match &self.inner.kind {
            Kind::PerCase(line) => return Ok(line.clone()),
            Kind::Shared { size, .. } => *size,
        };
        loop {
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a line given back in between
            // is not missed.
            returned.as_mut().enable();
            {
                let mut st = self.lock();
                let want = nth % size.max(1) + 1;
                let at = st
                    .free
                    .iter()
                    .position(|l| l.number.unwrap_or(1) == want)
                    .unwrap_or(0);
                if let Some(line) = st.free.remove(at) {
                    st.out += 1;
                    return Ok(line);
                }
                if st.out == 0 {
                    return Err(format!(
                        "no clean line is left in the pool: {}",
                        st.dirty.join("; ")
                    ));
                }
            }
            returned.await;
        }
    }

    /// Gives a line back after its case: straight into the pool when the
    /// leak check found it idle; otherwise only once the profile's clean
    /// command has run and its state command shows nothing left.
    pub(super) async fn give_back(
        &self,
        line: Identities,
        result: &CaseResult,
        topology: &Topology,
    ) {
        if let Kind::PerCase(_) = self.inner.kind {
            return;
        }
        let dirty = match left_behind(result) {
            false => None,
            true => self.clean(&line, topology).await.err(),
        };
        {
            let mut st = self.lock();
            st.out -= 1;
            match dirty {
                None => st.free.push_back(line),
                Some(why) => st.dirty.push(format!(
                    "{} was left dirty by {} ({why})",
                    line.describe(topology).unwrap_or_else(|| "the line".into()),
                    result.key()
                )),
            }
        }
        self.inner.returned.notify_waiters();
    }

    async fn clean(&self, line: &Identities, topology: &Topology) -> Result<(), String> {
        let Kind::Shared { profile, .. } = &self.inner.kind else {
            return Err("the target offers no way to clean a line".into());
        };
        let none = || {
            "the profile names no [line_commands] clean and state to make it idle again".to_string()
        };
        let (_, clean) = profile
            .line_command(|c| &c.clean, line, topology)
            .ok_or_else(none)?;
        let (_, state) = profile
            .line_command(|c| &c.state, line, topology)
            .ok_or_else(none)?;
        super::live::command(&clean)
            .await
            .map_err(|e| e.to_string())?;
        let out = super::live::command(&state)
            .await
            .map_err(|e| e.to_string())?;
        let left = crate::leak::server_state(&out, line, topology)?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} things still held after cleaning", left.len()))
        }
    }
}

/// Whether the case's leak check found anything, or the case did not run
/// to its end (its leak check may not have looked, or looked too early).
fn left_behind(result: &CaseResult) -> bool {
    result.error.is_some()
        || result
            .stages
            .iter()
            .find(|s| s.stage == crate::leak::STAGE)
            .is_none_or(|stage| stage.channels.iter().any(|c| !c.observed.is_empty()))
}
