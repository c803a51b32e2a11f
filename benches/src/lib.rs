//! Bench support (the benches live in `benches/benches`).
