//! The suite a command uses: the cases and their golden files, loaded and
//! checked before anything runs, and the case-pattern filter of `--cases`.

use std::path::{Path, PathBuf};

use crate::case::Case;
use crate::golden::GoldenStage;
use crate::input::InputError;
use crate::target::Profile;
use crate::topology::Topology;

/// Where a command finds the suite: the case files and the golden files.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub cases: PathBuf,
    pub golden: PathBuf,
}

/// Why a command has no suite to work on (bad input, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("no case files (*.toml) in {}", .0.display())]
    NoCases(PathBuf),
    #[error("no case in {} matches {pattern:?}", .dir.display())]
    NoMatch { dir: PathBuf, pattern: String },
    #[error("no case {id:?} in {}", .dir.display())]
    NoCase { dir: PathBuf, id: String },
}

impl Dirs {
    /// The cases whose ids match `pattern` (all without one), each with
    /// its golden files; with `recording`, a golden directory that does
    /// not exist yet expects nothing (see [`Prepared::new_recording`]).
    pub fn load(
        &self,
        topology: &Topology,
        pattern: Option<&str>,
        recording: bool,
    ) -> Result<Vec<Prepared>, SuiteError> {
        let mut cases = Case::load_dir(&self.cases, topology)?;
        if cases.is_empty() {
            return Err(SuiteError::NoCases(self.cases.clone()));
        }
        if let Some(p) = pattern {
            cases.retain(|c| matches(p, &c.id));
            if cases.is_empty() {
                return Err(SuiteError::NoMatch {
                    dir: self.cases.clone(),
                    pattern: p.to_string(),
                });
            }
        }
        Ok(cases
            .into_iter()
            .map(|c| Prepared::load(c, &self.golden, topology, recording))
            .collect::<Result<_, _>>()?)
    }

    /// The case named `id`, with its golden files (`recording`: as in
    /// [`Dirs::load`]).
    pub fn case(
        &self,
        id: &str,
        topology: &Topology,
        recording: bool,
    ) -> Result<Prepared, SuiteError> {
        let case = Case::load_dir(&self.cases, topology)?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| SuiteError::NoCase {
                dir: self.cases.clone(),
                id: id.to_string(),
            })?;
        Ok(Prepared::load(case, &self.golden, topology, recording)?)
    }

    /// A target profile, its deviations checked against the whole suite
    /// (not only the cases a command selects): every case, stage, channel
    /// and golden event a deviation names must exist. A golden directory
    /// that does not exist yet (a case being recorded) has no events a
    /// deviation could name.
    pub fn profile(&self, path: &Path, topology: &Topology) -> Result<Profile, SuiteError> {
        let profile = Profile::load(path, topology)?;
        let suite = self.load(topology, None, true)?;
        let named: Vec<(&Case, &[GoldenStage])> = suite
            .iter()
            .map(|p| (&p.case, p.golden.as_slice()))
            .collect();
        profile.validate(&named)?;
        Ok(profile)
    }
}

/// A case with its golden files loaded: everything that can be wrong with
/// the input has been found before anything runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub case: Case,
    pub golden: Vec<GoldenStage>,
}

impl Prepared {
    /// For recording: a stage whose golden directory does not exist yet
    /// expects nothing on every channel, so that a run shows (and `--bless`
    /// writes) everything it observes.
    pub fn new_recording(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Prepared, InputError> {
        Prepared::load(case, golden_root, topology, true)
    }

    /// Every case of a cases directory with its golden files, or the first
    /// error in any of them.
    pub fn load_suite(
        cases_dir: &Path,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Vec<Prepared>, InputError> {
        Case::load_dir(cases_dir, topology)?
            .into_iter()
            .map(|c| Prepared::new(c, golden_root, topology))
            .collect()
    }

    pub fn new(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Prepared, InputError> {
        Prepared::load(case, golden_root, topology, false)
    }

    fn load(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
        recording: bool,
    ) -> Result<Prepared, InputError> {
        let golden = case
            .stages
            .iter()
            .map(|s| {
                let dir = golden_root.join(&s.golden);
                if recording && !dir.exists() {
                    let channels = crate::golden::channels(&case.parties, topology)
                        .into_iter()
                        .map(|c| (c, crate::golden::Expectation::Events(Vec::new())))
                        .collect();
                    Ok(GoldenStage { dir, channels })
                } else {
                    GoldenStage::load(golden_root, &s.golden, &case.parties, topology)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Prepared { case, golden })
    }
}

/// Does a case id match the user's pattern?
pub fn matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !id.starts_with(first)
        || !id[first.len()..].ends_with(last)
        || id.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &id[first.len()..id.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches("answered", "inbound-answered"));
        assert!(matches("inbound-*", "inbound-answered"));
        assert!(matches("*-answered", "inbound-answered"));
        assert!(matches("in*ed", "inbound-answered"));
        assert!(!matches("out*", "inbound-answered"));
        assert!(!matches("inbound-*-x", "inbound-answered"));
        assert!(!matches("ab*ba", "aba"));
    }
}
