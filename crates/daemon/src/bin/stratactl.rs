//! `stratactl`: the strata control client.
fn main() {}
