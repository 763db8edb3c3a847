//! The identities of one shared line of a target: which SIP user each DN of
//! the reference stands for on it, and the translation between the two.
//!
//! Cases and goldens speak in the reference's DNs (60970, 60970_2, 60972).
//! A target serves many independent copies of those parties, one per line
//! of its pool (line 3 of Kamailio: AoR `60970-3` for the line's phones,
//! `60972-3` for the caller). Everything a case sends goes out in its
//! line's SIP users ([`Identities::user`]); everything a source reports in
//! the server's users comes back in DNs ([`Localizer`]), and
//! what belongs to another line is not the case's to see.

use std::collections::BTreeMap;

/// Where a profile's identities (and credentials' users) say the line
/// number goes.
pub const LINE_PLACEHOLDER: &str = "{line}";

use crate::model::{Channel, Event, Value};
use crate::observation::Observation;
use crate::topology::Topology;

/// One line's DN -> SIP user map, and its number in the target's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// 1-based; `None` for a target with a single, unnumbered line.
    pub number: Option<usize>,
    /// DN -> SIP user part. Covers every DN of the topology.
    pub users: BTreeMap<String, String>,
}

impl Identities {
    /// Every DN as its own SIP user (the embedded server's, and the
    /// reference page's, identities).
    pub fn own(topology: &Topology) -> Identities {
        Identities {
            number: None,
            users: topology.own_identities(),
        }
    }

    /// The SIP user a DN (or a line's number) is on this line; a DN the
    /// map does not name is its own user.
    pub fn user<'a>(&'a self, dn: &'a str) -> &'a str {
        self.users.get(dn).map_or(dn, String::as_str)
    }

    /// The AoR of the (topology's) shared line on this line of the pool.
    pub fn line_aor(&self, topology: &Topology, domain: &str) -> String {
        let number = topology.lines.first().map_or("", |l| l.number.as_str());
        format!("sip:{}@{domain}", self.user(number))
    }

    /// The DN each SIP user stands for in the golden files: on a server
    /// where the phones of a line share an AoR, their user is the line's
    /// number.
    pub fn dn_of_user(&self, topology: &Topology) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (dn, user) in &self.users {
            let name = topology
                .line_of(dn)
                .map(|l| l.number.clone())
                .unwrap_or_else(|| dn.clone());
            out.entry(user.clone()).or_insert(name);
        }
        out
    }

    /// The DN a SIP user a server reports stands for: the one DN that has
    /// it, or, for a user several DNs share (the phones of a line on one
    /// AoR), the line's number. Unlike [`Identities::dn_of_user`], a user
    /// of its own keeps its DN (60970_2 on the embedded server).
    pub fn reported_dn(&self, topology: &Topology) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (dn, user) in &self.users {
            let shared = self.users.iter().any(|(d, u)| u == user && d != dn);
            let name = match topology.line_of(dn) {
                Some(l) if shared => l.number.clone(),
                _ => dn.clone(),
            };
            out.entry(user.clone()).or_insert(name);
        }
        out
    }

    /// How reports name the line: `line 3 (60970-3)`, or `None` for an
    /// unnumbered line.
    pub fn describe(&self, topology: &Topology) -> Option<String> {
        let n = self.number?;
        let number = topology.lines.first().map(|l| l.number.as_str())?;
        Some(format!("line {n} ({})", self.user(number)))
    }

    /// The topology of this line in SIP users: what a server hosting it
    /// (the embedded one, in tests) is configured with.
    pub fn topology(&self, topology: &Topology) -> Topology {
        let user = |dn: &String| self.user(dn).to_string();
        Topology {
            lines: topology
                .lines
                .iter()
                .map(|l| crate::topology::Line {
                    number: user(&l.number),
                    members: l.members.iter().map(user).collect(),
                })
                .collect(),
            plain: topology.plain.iter().map(user).collect(),
        }
    }

    /// What puts an event derived on this line's phones (whose channel is
    /// already a DN) in DNs: the SIP users it names (OtherDN,
    /// AppearanceUri) rewritten.
    pub fn renamer(&self, topology: &Topology) -> impl Fn(&mut Event) + Send + 'static {
        let dns = self.reported_dn(topology);
        move |event| {
            rename(&dns, event);
        }
    }
}

/// The localization of a server's own event stream, which also
/// carries call-monitoring events that name no DN (EventCallCreated, a
/// party's state by PartyID): those belong to the line whose DNs the
/// events of the same call (ConnID) name. Such an event is held until its
/// call is known to be this line's (then released in order, before the
/// event that told) or another's (then dropped). At most [`HELD`] are
/// held; beyond that the oldest are dropped and counted.
#[derive(Debug)]
pub struct Localizer {
    /// The line's user -> DN map ([`Identities::reported_dn`]).
    dns: BTreeMap<String, String>,
    ours: std::collections::HashSet<String>,
    theirs: std::collections::HashSet<String>,
    held: std::collections::VecDeque<(String, Observation)>,
    /// Held events dropped for want of room.
    pub dropped: usize,
}

/// How many events about calls not yet attributed a localizer holds.
pub const HELD: usize = 4096;

impl Localizer {
    pub fn new(line: &Identities, topology: &Topology) -> Localizer {
        Localizer {
            dns: line.reported_dn(topology),
            ours: Default::default(),
            theirs: Default::default(),
            held: Default::default(),
            dropped: 0,
        }
    }

    /// What a server's event becomes for this line's case, in order.
    pub fn push(&mut self, obs: Observation) -> Vec<Observation> {
        let conn = match obs.event.get(crate::model::Attr::ConnId) {
            Some(Value::Id(c)) => Some(c.clone()),
            _ => None,
        };
        let names_anyone = obs.channel != Channel::Monitoring
            || obs.event.attrs.values().any(|v| matches!(v, Value::Dn(_)));
        match localize(&self.dns, obs) {
            Some(local) if names_anyone => {
                let mut out = Vec::new();
                if let Some(c) = conn {
                    if self.ours.insert(c.clone()) {
                        out.extend(self.release(&c));
                    }
                }
                out.push(local);
                out
            }
            Some(local) => match conn {
                Some(c) if self.ours.contains(&c) => vec![local],
                Some(c) if self.theirs.contains(&c) => Vec::new(),
                Some(c) => {
                    if self.held.len() == HELD {
                        self.held.pop_front();
                        self.dropped += 1;
                    }
                    self.held.push_back((c, local));
                    Vec::new()
                }
                // No DN and no call: nothing ties it to a line.
                None => vec![local],
            },
            None => {
                if let Some(c) = conn {
                    if !self.ours.contains(&c) && !self.theirs.contains(&c) {
                        // Bounded whatever the server sends: forgetting
                        // other lines' calls only holds their events again
                        // (and the held ones are bounded too).
                        if self.theirs.len() == HELD {
                            self.theirs.clear();
                        }
                        self.held.retain(|(h, _)| *h != c);
                        self.theirs.insert(c);
                    }
                }
                Vec::new()
            }
        }
    }

    fn release(&mut self, conn: &str) -> Vec<Observation> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(c, _)| c == conn);
        self.held = rest.into();
        mine.into_iter().map(|(_, o)| o).collect()
    }
}

/// An observation a server reported in its SIP users, in the golden
/// files' DNs; `None` when it is about another line (its channel is a
/// user this line does not have, or it names users and none of this
/// line's). DNs are rewritten in the channel and in every DN-valued
/// attribute; a user the line does not know is left as it is, so a
/// stranger still shows in the diff. `dns`: the line's user -> DN map ([`Identities::reported_dn`]).
fn localize(dns: &BTreeMap<String, String>, mut obs: Observation) -> Option<Observation> {
    let ours = |user: &str| dns.get(user).cloned();
    obs.channel = match obs.channel {
        Channel::Dn(u) => Channel::Dn(ours(&u)?),
        Channel::Wire(u) => Channel::Wire(ours(&u)?),
        Channel::Monitoring => Channel::Monitoring,
    };
    let (named, mine) = rename(dns, &mut obs.event);
    if obs.channel == Channel::Monitoring && named && !mine {
        return None;
    }
    Some(obs)
}

/// Rewrites every DN-valued attribute that is one of `dns`' users; says
/// whether the event names any user, and any of these.
fn rename(dns: &BTreeMap<String, String>, event: &mut Event) -> (bool, bool) {
    let (mut named, mut mine) = (false, false);
    for value in event.attrs.values_mut() {
        if let Value::Dn(u) = value {
            named = true;
            if let Some(dn) = dns.get(u) {
                mine = true;
                *value = Value::Dn(dn.clone());
            }
        }
    }
    (named, mine)
}

/// The users of two lines must differ, or a case on one would see the
/// other's traffic: the first user two lines share, if any.
pub fn shared_user(a: &Identities, b: &Identities) -> Option<String> {
    a.users
        .values()
        .find(|u| b.users.values().any(|v| v == *u))
        .cloned()
}

/// Several lines as one topology of SIP users (each line's parties after
/// the other's): a server hosting the whole pool.
pub fn pool_topology(lines: &[Identities], topology: &Topology) -> Topology {
    let mut out = Topology {
        lines: Vec::new(),
        plain: Vec::new(),
    };
    for line in lines {
        let t = line.topology(topology);
        out.lines.extend(t.lines);
        out.plain.extend(t.plain);
    }
    out
}

/// Line 3 of a Kamailio-style pool (the line's phones share its AoR),
/// for unit tests.
#[cfg(test)]
pub(crate) fn line3() -> Identities {
    Identities {
        number: Some(3),
        users: BTreeMap::from([
            ("60972".into(), "60972-3".into()),
            ("60970".into(), "60970-3".into()),
            ("60970_2".into(), "60970-3".into()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KnownEvent;

    fn obs(channel: &str, event: Event) -> Observation {
        Observation {
            channel: Channel::parse(channel),
            event,
            raw: String::new(),
            within: None,
            record: None,
        }
    }

    #[test]
    fn users_and_dns_translate_both_ways() {
        let t = Topology::reference();
        let l = line3();
        assert_eq!(l.user("60970_2"), "60970-3");
        assert_eq!(l.user("unknown"), "unknown");
        assert_eq!(l.line_aor(&t, "sca.test"), "sip:60970-3@sca.test");
        assert_eq!(l.dn_of_user(&t)["60970-3"], "60970");
        assert_eq!(l.dn_of_user(&t)["60972-3"], "60972");
        assert_eq!(l.describe(&t).as_deref(), Some("line 3 (60970-3)"));
        assert_eq!(Identities::own(&t).describe(&t), None);
        // Shared by the line's phones: the line's number; a user of its
        // own keeps its DN.
        assert_eq!(l.reported_dn(&t)["60970-3"], "60970");
        assert_eq!(Identities::own(&t).reported_dn(&t)["60970_2"], "60970_2");
    }

    #[test]
    fn localize_keeps_this_line_and_drops_another() {
        use crate::model::Attr;
        let t = Topology::reference();
        let l = line3();
        let offered = Event::new(KnownEvent::Offered)
            .with_opt(Attr::OtherDn, Some(Value::Dn("60972-3".into())));
        let got = localize(&l.reported_dn(&t), obs("sca.60970-3", offered.clone())).unwrap();
        assert_eq!(got.channel, Channel::parse("sca.60970"));
        assert_eq!(got.event.attrs[&Attr::OtherDn], Value::Dn("60972".into()));
        // Another line's phone: not this case's.
        assert!(localize(&l.reported_dn(&t), obs("sca.60970-4", offered)).is_none());
        // Monitoring: kept when it names one of ours, dropped when it names
        // only strangers, and a stranger beside ours is left for the diff.
        let party = |dn: &str| {
            Event::new(KnownEvent::CallPartyAdded).with_opt(Attr::Dn, Some(Value::Dn(dn.into())))
        };
        assert!(localize(&l.reported_dn(&t), obs("monitoring", party("60972-4"))).is_none());
        let kept = localize(&l.reported_dn(&t), obs("monitoring", party("60972-3"))).unwrap();
        assert_eq!(kept.event.attrs[&Attr::Dn], Value::Dn("60972".into()));
    }

    #[test]
    fn a_call_that_names_no_dn_goes_with_the_line_its_other_events_name() {
        use crate::model::Attr;
        let t = Topology::reference();
        let mut l = Localizer::new(&line3(), &t);
        let created = |c: &str| {
            obs(
                "monitoring",
                Event::new(KnownEvent::CallCreated)
                    .with_opt(Attr::ConnId, Some(Value::Id(c.into()))),
            )
        };
        let added = |c: &str, dn: &str| {
            obs(
                "monitoring",
                Event::new(KnownEvent::CallPartyAdded)
                    .with_opt(Attr::ConnId, Some(Value::Id(c.into())))
                    .with_opt(Attr::Dn, Some(Value::Dn(dn.into()))),
            )
        };
        assert!(
            l.push(created("mine")).is_empty(),
            "held until its call is known"
        );
        assert!(l.push(created("theirs")).is_empty());
        assert!(l.push(added("theirs", "60970-4")).is_empty());
        let out = l.push(added("mine", "60970-3"));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].event.name.to_string(), "EventCallCreated");
        assert_eq!(out[1].event.attrs[&Attr::Dn], Value::Dn("60970".into()));
        assert_eq!(
            l.push(created("mine")).len(),
            1,
            "a known call passes at once"
        );
        assert!(
            l.push(created("theirs")).is_empty(),
            "another line's call is dropped"
        );
        assert!(l.held.is_empty());
        // Whatever the server sends, what it remembers stays bounded.
        for i in 0..HELD + 10 {
            l.push(created(&format!("c{i}")));
            l.push(added(&format!("t{i}"), "60970-4"));
        }
        assert!(l.held.len() <= HELD && l.theirs.len() <= HELD);
        assert_eq!(l.dropped, 10);
    }

    #[test]
    fn lines_must_not_share_users() {
        let mut other = line3();
        assert_eq!(shared_user(&line3(), &other).as_deref(), Some("60970-3"));
        for u in other.users.values_mut() {
            *u = u.replace("-3", "-4");
        }
        assert_eq!(shared_user(&line3(), &other), None);
        let t = pool_topology(&[line3(), other], &Topology::reference());
        assert_eq!(t.lines.len(), 2);
        assert_eq!(t.plain, vec!["60972-3", "60972-4"]);
    }
}
