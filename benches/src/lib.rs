//! Support code for the benches.
