//! Benchmarks of scs against its peers; run with `cargo xtask bench`.
