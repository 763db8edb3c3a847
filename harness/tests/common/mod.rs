//! What the integration tests share: the repository's own suite.

use std::path::Path;

use scacheck::run::Prepared;
use scacheck::topology::Topology;

/// Every case in cases/ with its golden files, or what is wrong with them.
pub fn load() -> Result<(Vec<Prepared>, Topology), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topology = Topology::reference();
    let suite = Prepared::load_suite(
        &root.join("cases"),
        &root.join("fixtures/golden"),
        &topology,
    )
    .map_err(|e| e.to_string())?;
    Ok((suite, topology))
}

/// The same, for tests that cannot run without it.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn suite() -> (Vec<Prepared>, Topology) {
    load().unwrap_or_else(|e| panic!("{e}"))
}
