//! Source fetchers: a local folder, a `.tar.gz` archive, a git repository.
