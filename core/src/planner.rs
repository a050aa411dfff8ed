//! Dependency ordering of a project's services (petgraph).
