//! strata-engine.
