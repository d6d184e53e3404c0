//! User-level benchmarks of procpool; the benches live in `benches/benches/`.
