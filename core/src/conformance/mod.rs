//! Conformance kits: public async test functions that every implementation of a trait
//! calls from its own tests. Each panics with a clear message on a violation.

pub mod store;
