//! `cargo xtask`: project automation that needs nothing but cargo. See docs/ARCHITECTURE.md.
fn main() {}
