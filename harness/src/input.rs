//! Errors in the files a user writes (cases, golden files, target
//! profiles): always the file and, where known, the line.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl InputError {
    pub fn new(path: &Path, line: Option<usize>, message: impl Into<String>) -> InputError {
        InputError {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A TOML parse error of `text` (the contents of `path`) as an input error
/// at its line. toml gives no message for a control character (a NUL in a
/// comment, say), and a misleading one when it follows a value: such an
/// error says which character it is and where.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> InputError {
    let Some(at) = e.span().map(|s| s.start) else {
        return InputError::new(path, None, e.message());
    };
    let line = line_of(text, at);
    let control = text
        .get(at..)
        .and_then(|rest| rest.chars().next())
        .filter(|c| c.is_control() && *c != '\t' && *c != '\n');
    let message = match control {
        Some(c) => {
            let column = text.get(..at).map_or(0, |before| {
                before.chars().rev().take_while(|c| *c != '\n').count()
            }) + 1;
            format!(
                "column {column}: control character U+{:04X} (TOML allows none but tab, not even in a comment)",
                u32::from(c)
            )
        }
        None if e.message().trim().is_empty() => "not valid TOML here".to_string(),
        None => e.message().to_string(),
    };
    InputError::new(path, Some(line), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only parsed
    struct Doc {
        name: String,
    }

    fn error(text: &str) -> String {
        let e = toml::from_str::<Doc>(text).unwrap_err();
        toml_error(Path::new("f.toml"), text, &e).to_string()
    }

    #[test]
    fn a_control_character_is_named_with_its_line_and_column() {
        assert_eq!(
            error("name = \"k\"\n# a \0 in a comment\n"),
            "f.toml:2: column 5: control character U+0000 (TOML allows none but tab, not even in a comment)"
        );
        assert_eq!(
            error("name = \"k\" # after a value \u{1}\n"),
            "f.toml:1: column 28: control character U+0001 (TOML allows none but tab, not even in a comment)"
        );
    }

    #[test]
    fn other_errors_keep_tomls_message() {
        let e = error("name = 1\n");
        assert!(e.starts_with("f.toml:1: invalid type"), "{e}");
    }
}

/// A path a profile names, with `${NAME}` replaced by the environment
/// variable NAME (a file a start script writes into a state directory it
/// exports, say: `${SCACHECK_KAMAILIO_STATE}/ca.pem`), and made relative to
/// `base` (the profile's directory) unless it is absolute. The error says
/// which variable is missing or what is malformed.
pub fn expand_path(value: &str, base: &Path) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{value:?}: `${{` without a closing `}}`"))?;
        let name = &after[..end];
        let v = std::env::var(name)
            .map_err(|_| format!("{value:?} names ${{{name}}}, which is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let path = PathBuf::from(out);
    Ok(if path.is_absolute() {
        path
    } else {
        base.join(path)
    })
}

#[cfg(test)]
mod expand_tests {
    use super::*;

    #[test]
    fn paths_expand_variables_and_are_relative_to_the_profile() {
        std::env::set_var("SCACHECK_TEST_EXPAND", "/state");
        let base = Path::new("/profiles/k");
        assert_eq!(
            expand_path("${SCACHECK_TEST_EXPAND}/ca.pem", base).unwrap(),
            PathBuf::from("/state/ca.pem")
        );
        assert_eq!(
            expand_path("ca.pem", base).unwrap(),
            PathBuf::from("/profiles/k/ca.pem")
        );
        let e = expand_path("${SCACHECK_TEST_UNSET_VARIABLE}/x", base).unwrap_err();
        assert!(
            e.contains("SCACHECK_TEST_UNSET_VARIABLE") && e.contains("not set"),
            "{e}"
        );
        assert!(expand_path("${OPEN/x", base)
            .unwrap_err()
            .contains("closing"));
    }
}
