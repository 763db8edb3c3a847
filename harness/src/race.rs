//! A race judged: a stage whose steps are fired `together` by different
//! phones. Which of two phones seizing the same appearance at once wins, or
//! which of two phones answering one call at once is connected, is the
//! server's to decide, and either outcome is right so long as exactly one
//! wins and everything after follows the winner. The golden of such a stage
//! is written for one winner (the one its capture or its author saw). So
//! before the stage is compared, the winner is read from what was observed,
//! never from which comparison passes: for seizures, the racing phone whose
//! wire channel shows `SeizeGranted`; for answers, the racing phone whose
//! DN channel shows `EventEstablished` and no `EventReleased`. If exactly
//! one racing phone won in the golden and exactly one other one won in what
//! was observed, the golden is read with those two phones' DNs exchanged:
//! their channels, the DN values on their own channels, the wire and the
//! monitoring stream (the PartyID symbols named for them too), and the
//! channels and values of the deviations declared there. A DN value on
//! another party's channel stays as written: the caller's OtherDN is the
//! line's number, whichever phone took the call. Everything else is
//! compared as written. The stages after the race are read with the same
//! exchange and their steps taken by the phone each stands for ([`Roles`]),
//! until the next race decides. Any other outcome (no winner, two winners)
//! leaves the golden as it is, and the stage fails on it.

use crate::case::{Action, Stage};
use crate::golden::Expectation;
use crate::model::{Channel, EventName, KnownEvent, Value};
use crate::observation::Observation;

/// What the phones of a race raced to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceKind {
    /// Seize one appearance: the winner is granted.
    Seize,
    /// Answer one call: the winner is connected, the other released.
    Answer,
}

impl RaceKind {
    /// The kind of race `stage` is, if it is one.
    pub fn of(stage: &Stage) -> Option<RaceKind> {
        let all = |f: fn(&Action) -> bool| stage.steps.iter().all(|s| f(&s.action));
        if !stage.together {
            None
        } else if all(|a| matches!(a, Action::Seize { .. })) {
            Some(RaceKind::Seize)
        } else if all(|a| *a == Action::Answer) {
            Some(RaceKind::Answer)
        } else {
            None
        }
    }

    /// The racing phones that won, by the events of a stage (each phone
    /// once; several: no single winner).
    fn winners<'a>(
        self,
        actors: &[String],
        events: impl Iterator<Item = (&'a Channel, &'a EventName)>,
    ) -> Vec<String> {
        let mut won: Vec<String> = Vec::new();
        let mut released: Vec<String> = Vec::new();
        for (channel, name) in events {
            let racer = |dn: &String| actors.contains(dn).then(|| dn.clone());
            let known = match name {
                EventName::Known(k) => *k,
                _ => continue,
            };
            match (self, channel, known) {
                (RaceKind::Seize, Channel::Wire(dn), KnownEvent::SeizeGranted)
                | (RaceKind::Answer, Channel::Dn(dn), KnownEvent::Established) => {
                    won.extend(racer(dn))
                }
                (RaceKind::Answer, Channel::Dn(dn), KnownEvent::Released) => {
                    released.extend(racer(dn))
                }
                _ => {}
            }
        }
        won.retain(|dn| !released.contains(dn));
        won.sort();
        won.dedup();
        won
    }
}

/// What a race stage showed: its phones, and who won in the golden and in
/// what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Race {
    pub stage: String,
    pub kind: RaceKind,
    pub actors: Vec<String>,
    pub expected: Option<String>,
    pub observed: Option<String>,
}

impl std::fmt::Display for Race {
    /// What a case's notes say of it: `stage 2-seize: a line-seize race of
    /// 60970 and 60970_2, won by 60970_2 (the golden's winner: 60970)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = |w: &Option<String>| w.clone().unwrap_or_else(|| "no single phone".into());
        let kind = match self.kind {
            RaceKind::Seize => "a line-seize race",
            RaceKind::Answer => "an answer race",
        };
        write!(
            f,
            "stage {}: {kind} of {}, won by {} (the golden's winner: {})",
            self.stage,
            self.actors.join(" and "),
            who(&self.observed),
            who(&self.expected),
        )
    }
}

/// What a case's notes say of its races: each race's outcome, and where
/// a case fought several (`trials`), how many each phone won and how many
/// had no single winner: `20 races: 60970 won 12, 60970_2 won 8`.
pub fn notes(races: &[Race]) -> Vec<String> {
    let mut notes: Vec<String> = races.iter().map(|r| r.to_string()).collect();
    if races.len() > 1 {
        let mut won: std::collections::BTreeMap<&str, usize> = races
            .iter()
            .flat_map(|r| r.actors.iter().map(|a| (a.as_str(), 0)))
            .collect();
        let mut none = 0;
        for r in races {
            match &r.observed {
                Some(w) => *won.entry(w).or_default() += 1,
                None => none += 1,
            }
        }
        let mut tally: Vec<String> = won.iter().map(|(dn, n)| format!("{dn} won {n}")).collect();
        if none > 0 {
            tally.push(format!("{none} had no single winner"));
        }
        notes.push(format!("{} races: {}", races.len(), tally.join(", ")));
    }
    notes
}

/// The one phone that won, if exactly one did.
fn single(mut winners: Vec<String>) -> Option<String> {
    (winners.len() == 1).then(|| winners.remove(0))
}

/// The race `stage` shows: who won in its golden and in what was
/// observed (None: the stage is no race [`RaceKind::of`] knows).
pub fn race(
    stage: &Stage,
    expected: &[(Channel, Expectation)],
    observed: &[Observation],
) -> Option<Race> {
    let kind = RaceKind::of(stage)?;
    let actors: Vec<String> = stage.steps.iter().map(|s| s.actor.clone()).collect();
    let golden = expected
        .iter()
        .filter_map(|(c, e)| match e {
            Expectation::Events(events) => Some((c, events)),
            Expectation::Unasserted(_) => None,
        })
        .flat_map(|(c, events)| events.iter().map(move |e| (c, &e.event.name)));
    let golden_winner = single(kind.winners(&actors, golden));
    let observed_winner = single(kind.winners(
        &actors,
        observed.iter().map(|o| (&o.channel, &o.event.name)),
    ));
    Some(Race {
        stage: stage.name.clone(),
        kind,
        actors,
        expected: golden_winner,
        observed: observed_winner,
    })
}

impl Race {
    /// The golden's winner and the observed one, when each is one phone
    /// and they differ.
    fn exchange(&self) -> Option<(&str, &str)> {
        match (&self.expected, &self.observed) {
            (Some(a), Some(b)) if a != b => Some((a, b)),
            _ => None,
        }
    }
}

/// Which golden phone each racing phone stands for, carried from stage to
/// stage as [`crate::diff::Bindings`] carries IDs: the stages after a race
/// are written for its golden winner (the winner's seizure expires, the
/// winner dials), so they are read with the same exchange, until the next
/// race decides again.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    exchange: Option<(String, String)>,
}

/// A stage's golden and the deviations declared on it, as they are to be
/// compared with what has been observed in it so far ([`Roles::read`]).
#[derive(Debug, Clone)]
pub struct Read {
    pub golden: crate::golden::GoldenStage,
    pub deviations: Vec<crate::deviation::Deviation>,
    pub race: Option<Race>,
    exchange: Option<(String, String)>,
}

impl Read {
    pub fn deviations(&self) -> Vec<&crate::deviation::Deviation> {
        self.deviations.iter().collect()
    }
}

impl Roles {
    /// The phone that takes a step the case gives `actor`: the steps after
    /// a race are written for its golden winner too (the winner releases
    /// its seizure, the winner dials).
    pub fn actor<'a>(&'a self, actor: &'a str) -> &'a str {
        match &self.exchange {
            Some((a, b)) if actor == a => b,
            Some((a, b)) if actor == b => a,
            _ => actor,
        }
    }

    /// `steps` as [`Roles::actor`] has them taken.
    pub fn steps(&self, steps: &[crate::case::Step]) -> Vec<crate::case::Step> {
        steps
            .iter()
            .map(|s| crate::case::Step {
                actor: self.actor(&s.actor).to_string(),
                ..s.clone()
            })
            .collect()
    }

    /// `golden` and `deviations` read with the exchange the latest race
    /// decided, or the one `stage` decides if it is a race and `observed`
    /// (what it has shown so far) names its winner. Also what waiting for
    /// a race stage's events counts with: until the winner is known, the
    /// golden as written.
    pub fn read(
        &self,
        stage: &Stage,
        golden: &crate::golden::GoldenStage,
        deviations: &[&crate::deviation::Deviation],
        observed: &[Observation],
    ) -> Read {
        let race = race(stage, &golden.channels, observed);
        let exchange = match &race {
            Some(r) => r.exchange().map(|(a, b)| (a.to_string(), b.to_string())),
            None => self.exchange.clone(),
        };
        let mut read = Read {
            golden: golden.clone(),
            deviations: deviations.iter().map(|d| (*d).clone()).collect(),
            race,
            exchange,
        };
        if let Some((a, b)) = &read.exchange {
            read.golden.channels = exchanged(&golden.channels, a, b);
            for d in &mut read.deviations {
                // A deviation's events are read as its channels' are.
                if d.channels.iter().any(|c| swaps_values(c, a, b)) {
                    d.edit.for_each_value(|v| swap_value(v, a, b));
                }
                for c in &mut d.channels {
                    *c = swap_channel(c, a, b);
                }
            }
        }
        read
    }

    /// Keeps the exchange `read` decided for the stages after it.
    fn hold(&mut self, read: &Read) {
        self.exchange = read.exchange.clone();
    }

    /// A stage compared as [`crate::diff::compare_stage`] does, its golden
    /// and deviations first [`Roles::read`]; the exchange it decided holds
    /// for the stages after it. Returns the race it showed, if it is one.
    pub fn compare(
        &mut self,
        stage: &Stage,
        golden: &crate::golden::GoldenStage,
        observed: &[Observation],
        seen: &crate::observation::Observability,
        bindings: &mut crate::diff::Bindings,
        deviations: &[&crate::deviation::Deviation],
    ) -> (crate::diff::StageResult, Option<Race>) {
        let read = self.read(stage, golden, deviations, observed);
        self.hold(&read);
        let result = crate::diff::compare_stage(
            &stage.name,
            &read.golden.channels,
            observed,
            seen,
            bindings,
            &read.deviations(),
        );
        (result, read.race)
    }
}

/// The names of the stages of `case` that are read with an exchange
/// (their race, or one before them, was won by another phone than the
/// golden's), given each stage's events.
pub fn exchanged_stages(
    stages: &[Stage],
    golden: &[crate::golden::GoldenStage],
    events: &[(String, Observation)],
) -> Vec<String> {
    let mut roles = Roles::default();
    let mut out = Vec::new();
    for (stage, golden) in stages.iter().zip(golden) {
        let observed: Vec<Observation> = events
            .iter()
            .filter(|(s, _)| *s == stage.name)
            .map(|(_, o)| o.clone())
            .collect();
        let read = roles.read(stage, golden, &[], &observed);
        roles.hold(&read);
        if read.exchange.is_some() {
            out.push(stage.name.clone());
        }
    }
    out
}

/// `dn`, or the other of `a` and `b` if it is one of them.
fn swap_dn(dn: &str, a: &str, b: &str) -> String {
    if dn == a {
        b.to_string()
    } else if dn == b {
        a.to_string()
    } else {
        dn.to_string()
    }
}

/// `channel` with DNs `a` and `b` exchanged.
fn swap_channel(channel: &Channel, a: &str, b: &str) -> Channel {
    let swap = |dn: &str| swap_dn(dn, a, b);
    match channel {
        Channel::Dn(dn) => Channel::Dn(swap(dn)),
        Channel::Wire(dn) => Channel::Wire(swap(dn)),
        Channel::Monitoring => Channel::Monitoring,
    }
}

/// Are the DN values on `channel` read with `a` and `b` exchanged? On
/// theirs, the wire and the monitoring stream; not on another party's DN
/// channel, where the line's number is the line's whichever phone won.
fn swaps_values(channel: &Channel, a: &str, b: &str) -> bool {
    match channel {
        Channel::Dn(dn) => dn == a || dn == b,
        Channel::Wire(_) | Channel::Monitoring => true,
    }
}

/// A DN value, or a PartyID symbol named for a DN (`$p60970`), with `a`
/// and `b` exchanged.
fn swap_value(v: &mut Value, a: &str, b: &str) {
    match v {
        Value::Dn(dn) => *dn = swap_dn(dn, a, b),
        Value::Id(id) => {
            if let Some(dn) = id.strip_prefix("$p") {
                if dn == a || dn == b {
                    *id = format!("$p{}", swap_dn(dn, a, b));
                }
            }
        }
        _ => {}
    }
}

/// `expected` with DNs `a` and `b` exchanged: their channels, and the
/// values [`swaps_values`] says.
fn exchanged(expected: &[(Channel, Expectation)], a: &str, b: &str) -> Vec<(Channel, Expectation)> {
    let swapped: Vec<(Channel, Expectation)> = expected
        .iter()
        .map(|(channel, e)| {
            let values = swaps_values(channel, a, b);
            let e = match e {
                Expectation::Unasserted(why) => Expectation::Unasserted(why.clone()),
                Expectation::Events(events) => Expectation::Events(
                    events
                        .iter()
                        .map(|x| {
                            let mut x = x.clone();
                            if values {
                                for v in x.event.attrs.values_mut() {
                                    swap_value(v, a, b);
                                }
                            }
                            x
                        })
                        .collect(),
                ),
            };
            (swap_channel(channel, a, b), e)
        })
        .collect();
    // In the golden's channel order.
    let mut out: Vec<(Channel, Expectation)> = expected
        .iter()
        .filter_map(|(c, _)| swapped.iter().find(|(s, _)| s == c).cloned())
        .collect();
    for s in swapped {
        if !out.iter().any(|(c, _)| *c == s.0) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Step;
    use crate::golden::Expected;
    use crate::model::Event;

    fn stage(together: bool) -> Stage {
        let seize = |actor: &str| Step {
            actor: actor.into(),
            action: Action::Seize {
                index: 1,
                expires: 15,
            },
            line: 1,
        };
        Stage {
            name: "race".into(),
            covers: String::new(),
            golden: "g".into(),
            steps: vec![seize("60970"), seize("60970_2")],
            together,
            stagger: None,
            line: 1,
        }
    }

    fn events(names: &[KnownEvent]) -> Expectation {
        Expectation::Events(
            names
                .iter()
                .map(|n| Expected {
                    event: Event::new(*n),
                    path: "g".into(),
                    line: 1,
                })
                .collect(),
        )
    }

    fn golden() -> Vec<(Channel, Expectation)> {
        vec![
            (Channel::Dn("60970".into()), events(&[])),
            (
                Channel::Wire("60970".into()),
                events(&[KnownEvent::SeizeGranted, KnownEvent::Appearance]),
            ),
            (
                Channel::Wire("60970_2".into()),
                events(&[KnownEvent::SeizeRefused, KnownEvent::Appearance]),
            ),
        ]
    }

    /// The golden of `stage` as a case's first stage reads it.
    fn align(
        stage: &Stage,
        golden: &[(Channel, Expectation)],
        observed: &[Observation],
    ) -> (Vec<(Channel, Expectation)>, Option<Race>) {
        let read = Roles::default().read(stage, &golden_stage(golden), &[], observed);
        (read.golden.channels, read.race)
    }

    fn golden_stage(channels: &[(Channel, Expectation)]) -> crate::golden::GoldenStage {
        crate::golden::GoldenStage {
            dir: "g".into(),
            channels: channels.to_vec(),
        }
    }

    fn seen(channel: &str, name: KnownEvent) -> Observation {
        Observation {
            channel: Channel::parse(channel),
            event: Event::new(name),
            raw: String::new(),
            within: None,
            record: None,
        }
    }

    #[test]
    fn the_observed_winner_decides_which_phone_the_golden_grants() {
        let golden = golden();
        let observed = [
            seen("sca.60970", KnownEvent::SeizeRefused),
            seen("sca.60970_2", KnownEvent::SeizeGranted),
        ];
        let (aligned, race) = align(&stage(true), &golden, &observed);
        let race = race.unwrap();
        assert_eq!(race.observed.as_deref(), Some("60970_2"));
        assert_eq!(race.expected.as_deref(), Some("60970"));
        assert!(race.to_string().contains("won by 60970_2"), "{race}");
        let of = |dn: &str| {
            aligned
                .iter()
                .find(|(c, _)| *c == Channel::Wire(dn.into()))
                .map(|(_, e)| e.clone())
                .unwrap()
        };
        assert_eq!(
            of("60970_2"),
            events(&[KnownEvent::SeizeGranted, KnownEvent::Appearance])
        );
        assert_eq!(
            of("60970"),
            events(&[KnownEvent::SeizeRefused, KnownEvent::Appearance])
        );
        // The T-Library channel moves with its phone.
        assert!(aligned
            .iter()
            .any(|(c, _)| *c == Channel::Dn("60970_2".into())));
    }

    #[test]
    fn the_stages_after_a_race_are_read_and_taken_by_its_winner_until_the_next() {
        let mut roles = Roles::default();
        let won_by = |dn: &str| {
            let other = if dn == "60970" {
                "sca.60970_2"
            } else {
                "sca.60970"
            };
            vec![
                seen(&format!("sca.{dn}"), KnownEvent::SeizeGranted),
                seen(other, KnownEvent::SeizeRefused),
            ]
        };
        let race = golden_stage(&golden());
        let read = roles.read(&stage(true), &race, &[], &won_by("60970_2"));
        roles.hold(&read);
        // A later stage of no race: the golden's 60970 is the winner.
        let release = Stage {
            together: false,
            stagger: None,
            steps: vec![crate::case::Step {
                actor: "60970".into(),
                action: Action::Release,
                line: 1,
            }],
            ..stage(false)
        };
        let later = golden_stage(&[(
            Channel::Wire("60970".into()),
            events(&[KnownEvent::SeizeEnded]),
        )]);
        let read = roles.read(&release, &later, &[], &[]);
        assert_eq!(read.golden.channels[0].0, Channel::Wire("60970_2".into()));
        assert_eq!(roles.steps(&release.steps)[0].actor, "60970_2");
        // The next race decides again: the golden's winner won, as written.
        let read = roles.read(&stage(true), &race, &[], &won_by("60970"));
        roles.hold(&read);
        assert_eq!(roles.actor("60970"), "60970");
        assert_eq!(roles.read(&release, &later, &[], &[]).golden, later);
    }

    #[test]
    fn several_races_are_counted_by_winner() {
        let r = |observed: Option<&str>| Race {
            stage: "race-1".into(),
            kind: RaceKind::Seize,
            actors: vec!["60970".into(), "60970_2".into()],
            expected: Some("60970".into()),
            observed: observed.map(str::to_string),
        };
        let one = notes(&[r(Some("60970_2"))]);
        assert_eq!(one.len(), 1, "{one:?}");
        let three = notes(&[r(Some("60970_2")), r(None), r(Some("60970_2"))]);
        assert_eq!(three.len(), 4, "{three:?}");
        assert_eq!(
            three[3],
            "3 races: 60970 won 0, 60970_2 won 2, 1 had no single winner"
        );
    }

    #[test]
    fn an_answer_race_is_won_by_the_phone_in_the_call_and_read_for_it() {
        let answer = |actor: &str| Step {
            actor: actor.into(),
            action: Action::Answer,
            line: 1,
        };
        let answers = Stage {
            steps: vec![answer("60970"), answer("60970_2")],
            ..stage(true)
        };
        let with = |dn: &str, other: &str, names: &[KnownEvent]| {
            let events = names
                .iter()
                .map(|n| Expected {
                    event: Event::new(*n)
                        .with(crate::model::Attr::OtherDn, Value::Dn(other.into())),
                    path: "g".into(),
                    line: 1,
                })
                .collect();
            (Channel::Dn(dn.into()), Expectation::Events(events))
        };
        // The golden: 60970 connected, 60970_2 released; the caller's
        // OtherDN is the line's number.
        let golden = vec![
            with("60970", "60972", &[KnownEvent::Established]),
            with("60970_2", "60972", &[KnownEvent::Released]),
            with("60972", "60970", &[KnownEvent::Established]),
        ];
        let observed = [
            seen("60970", KnownEvent::Established),
            seen("60970", KnownEvent::Released),
            seen("60970_2", KnownEvent::Established),
        ];
        let (aligned, race) = align(&answers, &golden, &observed);
        let race = race.unwrap();
        assert_eq!(race.kind, RaceKind::Answer);
        assert_eq!(race.expected.as_deref(), Some("60970"));
        assert_eq!(race.observed.as_deref(), Some("60970_2"));
        assert!(race.to_string().contains("an answer race"), "{race}");
        let of = |dn: &str| {
            aligned
                .iter()
                .find(|(c, _)| *c == Channel::Dn(dn.into()))
                .map(|(_, e)| e.clone())
                .unwrap()
        };
        assert_eq!(
            of("60970_2"),
            with("60970_2", "60972", &[KnownEvent::Established]).1
        );
        assert_eq!(
            of("60970"),
            with("60970", "60972", &[KnownEvent::Released]).1
        );
        // Another party's DN values are the line's: not exchanged.
        assert_eq!(of("60972"), golden[2].1);
        // A stage of answers and seizures mixed is no race.
        let mixed = Stage {
            steps: vec![answer("60970"), stage(true).steps[1].clone()],
            ..stage(true)
        };
        assert!(align(&mixed, &golden, &observed).1.is_none());
    }

    #[test]
    fn party_symbols_and_deviation_values_are_exchanged_with_their_phones() {
        let mut v = Value::Id("$p60970".into());
        swap_value(&mut v, "60970", "60970_2");
        assert_eq!(v, Value::Id("$p60970_2".into()));
        let mut v = Value::Id("$p60970_retrieve".into());
        swap_value(&mut v, "60970", "60970_2");
        assert_eq!(v, Value::Id("$p60970_retrieve".into()));
        assert!(!swaps_values(
            &Channel::Dn("60972".into()),
            "60970",
            "60970_2"
        ));
        assert!(swaps_values(&Channel::Monitoring, "60970", "60970_2"));
    }

    #[test]
    fn no_single_winner_or_no_race_leaves_the_golden_as_written() {
        let golden = golden();
        let both = [
            seen("sca.60970", KnownEvent::SeizeGranted),
            seen("sca.60970_2", KnownEvent::SeizeGranted),
        ];
        let (aligned, race) = align(&stage(true), &golden, &both);
        assert_eq!(aligned, golden);
        assert_eq!(race.unwrap().observed, None);
        let won = [seen("sca.60970_2", KnownEvent::SeizeGranted)];
        let (aligned, race) = align(&stage(false), &golden, &won);
        assert_eq!(aligned, golden);
        assert!(race.is_none());
    }
}
