//! The soak test app; see `cargo xtask soak`.
fn main() {}
