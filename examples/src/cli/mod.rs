//! The `wharf` commands that talk to a server (and `wharf token`, which writes the
//! server's token file): their arguments ([`args`]), one module per command family,
//! and what several of them print ([`output`]).

pub(crate) mod args;
pub(crate) mod backup;
pub(crate) mod cron;
pub(crate) mod db;
pub(crate) mod deploy;
pub(crate) mod domains;
pub(crate) mod env;
pub(crate) mod login;
pub(crate) mod logs;
pub(crate) mod output;
pub(crate) mod previews;
mod remote;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod volumes;
