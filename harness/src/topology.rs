//! The parties of the reference: the shared line 60970 with its two phones
//! 60970 and 60970_2, and the ordinary phone 60972. Cases name parties by
//! these DNs; a target maps them to SIP identities.

/// A shared line and the DNs of its phones (members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's own number (its AoR user part).
    pub number: String,
    pub members: Vec<String>,
}

/// Every DN a case may use, and how they group into shared lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub lines: Vec<Line>,
    /// Phones that are not on a shared line.
    pub plain: Vec<String>,
}

impl Topology {
    /// The reference page's parties.
    pub fn reference() -> Topology {
        Topology {
            lines: vec![Line {
                number: "60970".into(),
                members: vec!["60970".into(), "60970_2".into()],
            }],
            plain: vec!["60972".into()],
        }
    }

    /// The reference's parties once per line of a pool of `lines`, each
    /// with `-N` after it (line 3: the shared line 60970-3 with its phones
    /// 60970-3 and 60970_2-3, and the phone 60972-3), as `scacheck serve
    /// --lines` serves them: a line per flow, as on Kamailio's pool.
    pub fn numbered(lines: usize) -> Topology {
        let one = Topology::reference();
        let at = |n: usize, dn: &String| format!("{dn}-{n}");
        Topology {
            lines: (1..=lines)
                .flat_map(|n| {
                    one.lines.iter().map(move |l| Line {
                        number: at(n, &l.number),
                        members: l.members.iter().map(|m| at(n, m)).collect(),
                    })
                })
                .collect(),
            plain: (1..=lines)
                .flat_map(|n| one.plain.iter().map(move |p| at(n, p)))
                .collect(),
        }
    }

    /// Every DN, plain phones first, then line members in order.
    /// Every DN as its own SIP user (the embedded server's identities).
    pub fn own_identities(&self) -> std::collections::BTreeMap<String, String> {
        self.dns()
            .into_iter()
            .map(|d| (d.to_string(), d.to_string()))
            .collect()
    }

    pub fn dns(&self) -> Vec<&str> {
        self.plain
            .iter()
            .chain(self.lines.iter().flat_map(|l| l.members.iter()))
            .map(String::as_str)
            .collect()
    }

    pub fn knows(&self, dn: &str) -> bool {
        self.dns().contains(&dn)
    }

    /// The shared line a DN is a member of.
    pub fn line_of(&self, dn: &str) -> Option<&Line> {
        self.lines
            .iter()
            .find(|l| l.members.iter().any(|m| m == dn))
    }

    /// The shared-line phones among `parties`, in their order.
    pub fn members_among(&self, parties: &[String]) -> Vec<String> {
        parties
            .iter()
            .filter(|d| self.line_of(d).is_some())
            .cloned()
            .collect()
    }

    /// Each shared-line phone among `parties` with its line's number.
    pub fn lines_of(&self, parties: &[String]) -> std::collections::HashMap<String, String> {
        parties
            .iter()
            .filter_map(|d| self.line_of(d).map(|l| (d.clone(), l.number.clone())))
            .collect()
    }

    /// The shared line whose number is `number`.
    pub fn line(&self, number: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.number == number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parties() {
        let t = Topology::reference();
        assert_eq!(t.dns(), vec!["60972", "60970", "60970_2"]);
        assert_eq!(
            t.line_of("60970_2").map(|l| l.number.as_str()),
            Some("60970")
        );
        assert!(t.line_of("60972").is_none());
        assert!(t.line("60970").is_some() && t.line("60972").is_none());
        assert!(!t.knows("6097"));
    }

    #[test]
    fn numbered_lines() {
        let t = Topology::numbered(2);
        assert_eq!(
            t.dns(),
            vec![
                "60972-1",
                "60972-2",
                "60970-1",
                "60970_2-1",
                "60970-2",
                "60970_2-2"
            ]
        );
        assert_eq!(
            t.line_of("60970_2-2").map(|l| l.number.as_str()),
            Some("60970-2")
        );
        assert!(!t.knows("60970") && !t.knows("60970-3"));
    }
}
