//! Cross-crate, multi-process integration tests live in `it/`.
