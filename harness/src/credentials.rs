//! The phones' credentials, as a target profile names them: by reference
//! only. A profile's `[[credentials]]` entries say which DNs they are for
//! (default: every DN no other entry names), the digest user (default: the
//! DN's SIP user on the case's line; a template over `{line}` otherwise)
//! and where the password is: `password_env` (an environment variable) or
//! `password_file` (a file, `${VAR}` expanded, relative to the profile; its
//! first line). The password is read once, when a run starts, into a
//! [`Secret`] that nothing prints; a profile, a report, the console and
//! every other file a run writes name only the reference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::input::{line_of, InputError};
use crate::line::{Identities, LINE_PLACEHOLDER};
use crate::sip::auth::{Credentials, Secret};
use crate::topology::Topology;

/// One `[[credentials]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    #[serde(default)]
    dns: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
}

/// Where a password is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordRef {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for PasswordRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordRef::Env(name) => write!(f, "${name}"),
            PasswordRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// One entry, checked: whom it is for, their digest user, where the
/// password is, and where the entry was written (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// None: every DN no other rule names.
    pub dns: Option<BTreeSet<String>>,
    /// None: the DN's SIP user on the line.
    pub user: Option<String>,
    pub password: PasswordRef,
    pub path: PathBuf,
    pub line: usize,
}

/// Reads a profile's `[[credentials]]` entries: each names its password
/// by exactly one reference, only known DNs, and no DN twice.
pub(crate) fn read(
    path: &Path,
    text: &str,
    raw: Vec<Spanned<RawCredentials>>,
    topology: &Topology,
) -> Result<Vec<Rule>, InputError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut named = BTreeSet::new();
    let mut catch_all = false;
    let mut rules = Vec::new();
    for entry in raw {
        let line = line_of(text, entry.span().start);
        let err = |m: String| InputError::new(path, Some(line), m);
        let e = entry.into_inner();
        let password = match (e.password_env, e.password_file) {
            (Some(var), None) if !var.is_empty() => PasswordRef::Env(var),
            (None, Some(file)) => {
                PasswordRef::File(crate::input::expand_path(&file, base).map_err(err)?)
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "give password_env or password_file, not both".into(),
                ))
            }
            _ => {
                return Err(err(
                    "credentials name their password by reference: password_env = \"VAR\" or password_file = \"PATH\" (never the password itself)".into(),
                ))
            }
        };
        let dns = match e.dns {
            None if catch_all => return Err(err("a second [[credentials]] without dns".into())),
            None => {
                catch_all = true;
                None
            }
            Some(dns) => {
                for dn in &dns {
                    if !topology.knows(dn) {
                        return Err(err(format!("unknown DN {dn:?}")));
                    }
                    if !named.insert(dn.clone()) {
                        return Err(err(format!("DN {dn} has credentials twice")));
                    }
                }
                Some(dns.into_iter().collect())
            }
        };
        rules.push(Rule {
            dns,
            user: e.user,
            password,
            path: path.to_path_buf(),
            line,
        });
    }
    Ok(rules)
}

/// The credentials of a run, read from their references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keys {
    rules: Vec<(Rule, Secret)>,
}

impl Keys {
    /// Reads every password the rules name; an error names the profile
    /// line and the reference, never a value.
    pub fn resolve(rules: &[Rule]) -> Result<Keys, InputError> {
        let mut out = Vec::new();
        for rule in rules {
            let err = |m: String| InputError::new(&rule.path, Some(rule.line), m);
            let value = match &rule.password {
                PasswordRef::Env(var) => std::env::var(var).map_err(|_| {
                    err(format!(
                        "the password of these credentials is in ${var}, which is not set"
                    ))
                })?,
                PasswordRef::File(file) => std::fs::read_to_string(file)
                    .map_err(|e| {
                        err(format!(
                            "the password file {} cannot be read: {e}",
                            file.display()
                        ))
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            if value.is_empty() {
                return Err(err(format!("the password in {} is empty", rule.password)));
            }
            out.push((rule.clone(), Secret::new(value)));
        }
        Ok(Keys { rules: out })
    }

    /// Keys from secrets already in hand (tests, the embedded server's
    /// own run): one rule for every DN.
    pub fn every_dn(password: Secret) -> Keys {
        let rule = Rule {
            dns: None,
            user: None,
            password: PasswordRef::Env(String::new()),
            path: PathBuf::new(),
            line: 0,
        };
        Keys {
            rules: vec![(rule, password)],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What phone `dn` answers challenges with on `line`, if anything.
    pub fn for_phone(&self, dn: &str, line: &Identities) -> Option<Credentials> {
        let (rule, secret) = self
            .rules
            .iter()
            .find(|(r, _)| r.dns.as_ref().is_some_and(|d| d.contains(dn)))
            .or_else(|| self.rules.iter().find(|(r, _)| r.dns.is_none()))?;
        let user = match &rule.user {
            Some(template) => {
                let number = line.number.map(|n| n.to_string()).unwrap_or_default();
                template.replace(LINE_PLACEHOLDER, &number)
            }
            None => line.user(dn).to_string(),
        };
        Some(Credentials {
            user,
            password: secret.clone(),
        })
    }

    /// Every digest user of `line`'s phones with their password: what a
    /// server that challenges them (the embedded one) must know.
    pub fn passwords(&self, line: &Identities, topology: &Topology) -> Vec<(String, Secret)> {
        let mut out: Vec<(String, Secret)> = Vec::new();
        for dn in topology.dns() {
            if let Some(c) = self.for_phone(dn, line) {
                if !out.iter().any(|(u, _)| *u == c.user) {
                    out.push((c.user, c.password));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        credentials: Vec<Spanned<RawCredentials>>,
    }

    fn rules(text: &str) -> Result<Vec<Rule>, InputError> {
        let doc: Doc = toml::from_str(text).unwrap();
        read(
            Path::new("/p/target.toml"),
            text,
            doc.credentials,
            &Topology::reference(),
        )
    }

    #[test]
    fn references_are_checked_with_their_line() {
        for (text, want) in [
            ("[[credentials]]\npassword = \"x\"\n", None),
            ("[[credentials]]\nuser = \"u\"\n", Some("by reference")),
            (
                "[[credentials]]\npassword_env = \"A\"\npassword_file = \"f\"\n",
                Some("not both"),
            ),
            (
                "[[credentials]]\npassword_env = \"A\"\n[[credentials]]\npassword_env = \"B\"\n",
                Some("second [[credentials]] without dns"),
            ),
            (
                "[[credentials]]\ndns = [\"60970\"]\npassword_env = \"A\"\n\n[[credentials]]\ndns = [\"60970\"]\npassword_env = \"B\"\n",
                Some("target.toml:5: DN 60970 has credentials twice"),
            ),
            (
                "[[credentials]]\ndns = [\"7\"]\npassword_env = \"A\"\n",
                Some("unknown DN \"7\""),
            ),
        ] {
            let parsed: Result<Doc, _> = toml::from_str(text);
            let Ok(doc) = parsed else {
                // An unknown key (a password written in the profile) is
                // refused by the reader.
                assert!(want.is_none(), "{text}");
                continue;
            };
            let e = read(Path::new("/p/target.toml"), text, doc.credentials, &Topology::reference())
                .unwrap_err();
            assert!(e.to_string().contains(want.unwrap()), "{e}");
        }
    }

    #[test]
    fn passwords_come_from_the_environment_or_a_file_and_users_from_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\nignored\n").unwrap();
        std::env::set_var("SCACHECK_TEST_CREDENTIALS_PW", "from-env");
        let text = format!(
            "[[credentials]]\ndns = [\"60972\"]\nuser = \"caller-{{line}}\"\npassword_file = \"{}\"\n[[credentials]]\npassword_env = \"SCACHECK_TEST_CREDENTIALS_PW\"\n",
            dir.path().join("pw").display()
        );
        let keys = Keys::resolve(&rules(&text).unwrap()).unwrap();
        let line = crate::line::line3();
        let caller = keys.for_phone("60972", &line).unwrap();
        assert_eq!(caller.user, "caller-3");
        assert_eq!(caller.password, Secret::new("from-file"));
        let phone = keys.for_phone("60970_2", &line).unwrap();
        assert_eq!(phone.user, line.user("60970_2"));
        assert_eq!(phone.password, Secret::new("from-env"));
        // The line's two phones share a user: the server knows it once.
        let users: Vec<String> = keys
            .passwords(&line, &Topology::reference())
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(users.len(), 2, "{users:?}");

        let missing = "[[credentials]]\npassword_env = \"SCACHECK_TEST_UNSET_PW\"\n";
        let e = Keys::resolve(&rules(missing).unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("target.toml:1:")
                && e.to_string().contains("$SCACHECK_TEST_UNSET_PW"),
            "{e}"
        );
        let gone = "[[credentials]]\npassword_file = \"/nonexistent/pw\"\n";
        let e = Keys::resolve(&rules(gone).unwrap()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        assert!(!format!("{keys:?}").contains("from-env"));
    }
}
