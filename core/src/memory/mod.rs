//! In-memory backends (builder, runtime, router) with fault injection: always compiled,
//! used in docs and tests.
