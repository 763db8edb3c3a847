//! The built-in suite is compiled in (`suite::built_in`): rebuild when a
//! case or golden file changes, not only when the code does.
fn main() {
    println!("cargo:rerun-if-changed=cases");
    println!("cargo:rerun-if-changed=fixtures/golden");
}
