//! Zero-config detection: what kind of project a folder holds, and how to build it.
