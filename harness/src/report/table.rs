//! `scacheck table`: the verdicts of several runs as one Markdown table
//! (for the README), read back from each report directory's summary.json:
//! a row per case, a column per run. It reads what a run wrote and nothing
//! of a run itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A Markdown table of verdicts, one row per case and one column per report
/// directory (named by its target), from each directory's summary.json. A
/// run over TCP keys its cases `<case>@tcp` and names itself `<name>@tcp`:
/// its column lines up with the others on the bare case id.
pub fn table(reports: &[PathBuf]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut columns: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for dir in reports {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let name = json["name"]
            .as_str()
            .or(json["target"].as_str())
            .unwrap_or("?")
            .to_string();
        let cases = json["cases"]
            .as_array()
            .with_context(|| format!("{} has no cases", path.display()))?;
        let verdicts = cases
            .iter()
            .filter_map(|c| {
                let id = c["id"].as_str()?;
                let case = id.split_once('@').map_or(id, |(case, _)| case);
                Some((case.to_string(), c["verdict"].as_str()?.to_string()))
            })
            .collect();
        columns.push((name, verdicts));
    }
    // Two runs of one target (with and without authentication, say) are
    // told apart by their directories.
    let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    for ((name, _), dir) in columns.iter_mut().zip(reports) {
        if names.iter().filter(|n| *n == name).count() > 1 {
            let base = dir.file_name().map(|d| d.to_string_lossy().into_owned());
            *name = format!(
                "{name} ({})",
                base.unwrap_or_else(|| dir.display().to_string())
            );
        }
    }
    let mut ids: Vec<&String> = columns.iter().flat_map(|(_, v)| v.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = format!(
        "| case | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    for id in ids {
        let cells: Vec<&str> = columns
            .iter()
            .map(|(_, v)| v.get(id).map(String::as_str).unwrap_or("-"))
            .collect();
        out.push_str(&format!("| `{id}` | {} |\n", cells.join(" | ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_run_lines_up_with_the_others_in_the_table() {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let summary = |name: &str, key: &str, verdict: &str| {
            format!(r#"{{"name": "{name}", "cases": [{{"id": "{key}", "verdict": "{verdict}"}}]}}"#)
        };
        std::fs::write(
            dirs[0].path().join("summary.json"),
            summary("kamailio", "hold-retrieve", "xfail"),
        )
        .unwrap();
        std::fs::write(
            dirs[1].path().join("summary.json"),
            summary("kamailio@tcp", "hold-retrieve@tcp", "fail"),
        )
        .unwrap();
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        assert_eq!(
            table(&paths).unwrap(),
            "| case | kamailio | kamailio@tcp |\n|---|---|---|\n| `hold-retrieve` | xfail | fail |\n"
        );
        // The same target twice: its columns named by their directories.
        let twice = [paths[0].clone(), paths[0].clone()];
        let head = table(&twice).unwrap();
        let dir = paths[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            head.starts_with(&format!("| case | kamailio ({dir}) | kamailio ({dir}) |")),
            "{head}"
        );
        let missing = tempfile::tempdir().unwrap();
        let err = table(&[missing.path().to_path_buf()]).unwrap_err();
        assert!(format!("{err:#}").contains("summary.json"), "{err:#}");
    }
}
