//! strata-clock.
