//! `scacheck table`: the verdicts of several runs as one Markdown table
//! (for the README), or with `--html FILE` as a page whose cells open that
//! case in that run's report, read back from each report directory's
//! summary.json: a row per case, a column per run. It reads what a run
//! wrote and nothing of a run itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One run's column: its name, its report directory and each case's key
/// (as its report names it) and verdict, by bare case id.
struct Column {
    name: String,
    dir: PathBuf,
    cases: BTreeMap<String, (String, String)>,
}

/// Each report directory's column, from its summary.json. A run over TCP
/// keys its cases `<case>@tcp` and names itself `<name>@tcp`: its column
/// lines up with the others on the bare case id. Two runs of one target
/// (with and without authentication, say) are told apart by their
/// directories.
fn columns(reports: &[PathBuf]) -> anyhow::Result<Vec<Column>> {
    use anyhow::Context as _;
    let mut columns: Vec<Column> = Vec::new();
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
        let cases = cases
            .iter()
            .filter_map(|c| {
                let id = c["id"].as_str()?;
                let case = id.split_once('@').map_or(id, |(case, _)| case);
                let verdict = c["verdict"].as_str()?.to_string();
                Some((case.to_string(), (id.to_string(), verdict)))
            })
            .collect();
        columns.push(Column {
            name,
            dir: dir.clone(),
            cases,
        });
    }
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    for c in columns.iter_mut() {
        if names.iter().filter(|n| **n == c.name).count() > 1 {
            let base = c.dir.file_name().map(|d| d.to_string_lossy().into_owned());
            c.name = format!(
                "{} ({})",
                c.name,
                base.unwrap_or_else(|| c.dir.display().to_string())
            );
        }
    }
    Ok(columns)
}

/// Every case id of any column, sorted.
fn ids(columns: &[Column]) -> Vec<&String> {
    let mut ids: Vec<&String> = columns.iter().flat_map(|c| c.cases.keys()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A Markdown table of verdicts, one row per case and one column per report
/// directory (named by its target), from each directory's summary.json.
pub fn table(reports: &[PathBuf]) -> anyhow::Result<String> {
    let columns = columns(reports)?;
    let mut out = format!(
        "| case | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    for id in ids(&columns) {
        let cells: Vec<&str> = columns
            .iter()
            .map(|c| c.cases.get(id).map_or("-", |(_, v)| v.as_str()))
            .collect();
        out.push_str(&format!("| `{id}` | {} |\n", cells.join(" | ")));
    }
    Ok(out)
}

/// The same matrix as an HTML page to be written at `page`: each cell
/// links to that case in that run's report.html (by a path relative to
/// the page, so the page and the reports can move together).
pub fn table_html(reports: &[PathBuf], page: &Path) -> anyhow::Result<String> {
    use maud::{html, PreEscaped, DOCTYPE};
    let columns = columns(reports)?;
    let from = page.parent().unwrap_or(Path::new("."));
    let links: Vec<String> = columns
        .iter()
        .map(|c| relative(from, &c.dir.join("report.html")))
        .collect();
    let visible = super::shown::visible;
    let counts = |c: &Column, v: &str| c.cases.values().filter(|(_, x)| x == v).count();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                title { "scacheck: verdicts of " (columns.len()) " runs" }
                style { (PreEscaped(TABLE_STYLE)) }
            }
            body {
                h1 { "scacheck: verdicts of " (columns.len()) " runs" }
                table id="matrix" {
                    tr {
                        th { "case" }
                        @for (c, link) in columns.iter().zip(&links) {
                            th { a href=(link) { (visible(&c.name)) } br; span class="dir" { (visible(&c.dir.display().to_string())) } }
                        }
                    }
                    @for id in ids(&columns) {
                        tr {
                            th class="case" { (visible(id)) }
                            @for (c, link) in columns.iter().zip(&links) {
                                @match c.cases.get(id) {
                                    Some((key, verdict)) => td class=(format!("v-{verdict}")) {
                                        a href=(format!("{link}#case-{key}")) { (visible(verdict)) }
                                    },
                                    None => td class="none" { "-" },
                                }
                            }
                        }
                    }
                    tr class="totals" {
                        th { "fail / xpass / pass" }
                        @for c in &columns {
                            td { (counts(c, "fail")) " / " (counts(c, "xpass")) " / " (counts(c, "pass")) }
                        }
                    }
                }
            }
        }
    };
    Ok(markup.into_string())
}

const TABLE_STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th.case{font:12px monospace}\
.dir{font-size:11px;color:#777}td a{text-decoration:none;color:inherit;display:block}\
.v-pass{background:#e6f4ea}.v-xfail{background:#eef6e0}.v-fail,.v-xpass,.v-inconclusive{background:#fde8e8;font-weight:bold}\
.v-skipped,.none{color:#999}";

/// `to` as a path relative to the folder `from` (both made absolute
/// first); `to` itself when they share nothing.
fn relative(from: &Path, to: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (absolute(from), absolute(to));
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return to.display().to_string();
    }
    let mut out: Vec<String> = vec!["..".to_string(); f.len() - common];
    out.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    out.join("/")
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
        // As a page: each cell opens that case in that run's report, by a
        // path relative to the page.
        let page = paths[0].join("matrix.html");
        let html = table_html(&paths, &page).unwrap();
        let other = paths[1].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            html.contains(
                r#"<td class="v-xfail"><a href="report.html#case-hold-retrieve">xfail</a></td>"#
            ),
            "{html}"
        );
        assert!(
            html.contains(&format!(
                r#"<td class="v-fail"><a href="../{other}/report.html#case-hold-retrieve@tcp">fail</a></td>"#
            )),
            "{html}"
        );
        let missing = tempfile::tempdir().unwrap();
        let err = table(&[missing.path().to_path_buf()]).unwrap_err();
        assert!(format!("{err:#}").contains("summary.json"), "{err:#}");
    }
}
