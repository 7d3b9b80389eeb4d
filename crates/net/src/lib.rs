//! strata-net.
