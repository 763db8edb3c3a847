//! What the integration tests share: the repository's own suite.

use std::path::Path;

use scacheck::run::Prepared;
use scacheck::topology::Topology;

/// Every case in cases/ with its golden files.
pub fn suite() -> (Vec<Prepared>, Topology) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topology = Topology::reference();
    let suite = Prepared::load_suite(
        &root.join("cases"),
        &root.join("fixtures/golden"),
        &topology,
    )
    .unwrap();
    (suite, topology)
}
