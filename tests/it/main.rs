//! Cross-crate, multi-process integration tests: one binary, one module per area.
