//! Examples of composing Wharf (see `examples/`).
