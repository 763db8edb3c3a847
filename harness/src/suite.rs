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

/// The suite's directories in a checkout, relative to where a command runs.
pub const CHECKOUT: (&str, &str) = ("cases", "fixtures/golden");

static BUILT_IN_CASES: include_dir::Dir = include_dir::include_dir!("$CARGO_MANIFEST_DIR/cases");
static BUILT_IN_GOLDEN: include_dir::Dir =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/fixtures/golden");

/// The suite compiled into the binary, as files a user can open (errors
/// and reports name them): extracted once per version and content into the
/// temporary directory, atomically, and reused.
pub fn built_in() -> std::io::Result<Dirs> {
    // FNV-1a over every path and content: a changed suite gets a new folder.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for dir in [&BUILT_IN_CASES, &BUILT_IN_GOLDEN] {
        let mut files: Vec<&include_dir::File> = Vec::new();
        collect(dir, &mut files);
        files.sort_by_key(|f| f.path());
        for f in files {
            feed(f.path().to_string_lossy().as_bytes());
            feed(f.contents());
        }
    }
    let root = std::env::temp_dir().join(format!(
        "scacheck-suite-{}-{hash:016x}",
        env!("CARGO_PKG_VERSION")
    ));
    if !root.join(".complete").exists() {
        let partial = root.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        for (dir, into) in [(&BUILT_IN_CASES, "cases"), (&BUILT_IN_GOLDEN, "golden")] {
            let into = partial.join(into);
            // extract() creates no folder, not even its own.
            let mut files = Vec::new();
            collect(dir, &mut files);
            for f in files {
                let path = into.join(f.path());
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(path, f.contents())?;
            }
        }
        std::fs::write(partial.join(".complete"), b"")?;
        // Another process may have finished first: its copy is as good.
        if std::fs::rename(&partial, &root).is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
    }
    Ok(Dirs {
        cases: root.join("cases"),
        golden: root.join("golden"),
    })
}

fn collect<'a>(dir: &'a include_dir::Dir<'a>, out: &mut Vec<&'a include_dir::File<'a>>) {
    out.extend(dir.files());
    for d in dir.dirs() {
        collect(d, out);
    }
}

impl Dirs {
    /// The directories a command uses: those given; else a checkout's
    /// (`cases/` and `fixtures/golden/` where the command runs), so that
    /// `--bless` and `golden accept` write into it; else the built-in
    /// suite, so that an installed binary runs from any directory.
    pub fn resolve(cases: Option<PathBuf>, golden: Option<PathBuf>) -> std::io::Result<Dirs> {
        let checkout = Dirs {
            cases: PathBuf::from(CHECKOUT.0),
            golden: PathBuf::from(CHECKOUT.1),
        };
        let in_checkout = checkout.cases.is_dir() && checkout.golden.is_dir();
        let default = if in_checkout || (cases.is_some() && golden.is_some()) {
            checkout
        } else {
            built_in()?
        };
        Ok(Dirs {
            cases: cases.unwrap_or(default.cases),
            golden: golden.unwrap_or(default.golden),
        })
    }
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

    /// What a capture is judged as (`--target` of `pcap check`): `embedded`
    /// (every DN its own SIP user, no deviations) or a profile's name, its
    /// lines and its deviations.
    pub fn judged_as(
        &self,
        target: &str,
        topology: &Topology,
    ) -> Result<
        (
            String,
            Vec<crate::line::Identities>,
            Vec<crate::deviation::Deviation>,
        ),
        SuiteError,
    > {
        if target == "embedded" {
            return Ok((
                target.into(),
                vec![crate::line::Identities::own(topology)],
                Vec::new(),
            ));
        }
        let profile = self.profile(Path::new(target), topology)?;
        Ok((profile.name, profile.lines, profile.deviations))
    }

    /// A target profile, its deviations checked against the whole suite
    /// (not only the cases a command selects): every case, stage, channel
    /// and golden event a deviation names must exist. A golden directory
    /// that does not exist yet (a case being recorded) has no events a
    /// deviation could name.
    pub fn profile(&self, path: &Path, topology: &Topology) -> Result<Profile, SuiteError> {
        let profile = Profile::load(path, topology)?;
        self.validated(profile, topology)
    }

    /// What a `--target` file of `scacheck run` describes: a real server's
    /// profile (validated as [`Dirs::profile`] does) or the embedded
    /// server's.
    pub fn target(
        &self,
        path: &Path,
        topology: &Topology,
    ) -> Result<crate::target::Loaded, SuiteError> {
        use crate::target::Loaded;
        Ok(match Loaded::load(path, topology)? {
            Loaded::Remote(p) => Loaded::Remote(Box::new(self.validated(*p, topology)?)),
            embedded => embedded,
        })
    }

    fn validated(&self, profile: Profile, topology: &Topology) -> Result<Profile, SuiteError> {
        let suite = self.load(topology, None, true)?;
        let named: Vec<(&Case, &[GoldenStage])> = suite
            .iter()
            .map(|p| (&p.case, p.golden.as_slice()))
            .collect();
        profile.validate(&named, topology)?;
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

/// Does a case id match the user's pattern: a substring, a pattern with
/// `*`, `=ID` for that id alone, or several of these separated by commas
/// (any one matching)?
pub fn matches(pattern: &str, id: &str) -> bool {
    pattern.split(',').any(|p| matches_one(p.trim(), id))
}

fn matches_one(pattern: &str, id: &str) -> bool {
    if let Some(exact) = pattern.strip_prefix('=') {
        return id == exact;
    }
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
        assert!(matches("barge-in,inbound-*", "inbound-answered"));
        assert!(matches("barge-in, hold-retrieve", "hold-retrieve"));
        assert!(!matches("barge-in,hold-retrieve", "inbound-answered"));
        assert!(!matches("inbound-*-x", "inbound-answered"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("=seize-race", "seize-race"));
        assert!(!matches("=seize-race", "seize-race-trials"));
        assert!(matches("seize-race", "seize-race-trials"));
    }
}
