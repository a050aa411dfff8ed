#![doc = include_str!("../README.md")]

mod destination;
mod pipe;
mod records;
mod run;
mod schedule;
mod source;

pub use destination::{AllowedEndpoints, Destination, DestinationView, S3Destination};
pub use records::{BackupId, BackupRecord, BackupState, Settings, VolumePolicy};
pub use run::{policy_key, policy_key_parts, Backups};
pub use schedule::{spawn_scheduler, validate_cron};
pub use source::{BackupSource, ExecSource, SourceKind, VolumeSource};
