//! What `/proc` says about processes, and signals to process groups guarded against
//! pid reuse.

use rustix::process::{kill_process_group, Pid, Signal};

/// The fields of `/proc/<pid>/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub(crate) state: char,
    /// The process group.
    pub(crate) pgrp: i32,
    /// Start time in clock ticks since boot: with the pid, it names one process for
    /// good (a reused pid has a later start time).
    pub(crate) start_time: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the
    // fields after it start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`, or `None` if there is no such process.
pub(crate) fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether the process `pid` that started at `start_time` still runs (a zombie does
/// not count; a different process that reused the pid does not either).
pub(crate) fn alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start_time == start_time && !matches!(s.state, 'Z' | 'X'))
}

/// Whether any live (non-zombie) process is in process group `pgid`.
fn group_has_members(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .any(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X'))
}

/// Sends `sig` to the process group led by `leader` (started at `start_time`), if it is
/// still ours: the leader runs with that start time, or the leader is gone but members
/// of its group remain and no other process has taken the leader's pid. Returns whether
/// a signal was sent.
pub(crate) fn signal_group(leader: i32, start_time: u64, sig: Signal) -> bool {
    let Some(pid) = Pid::from_raw(leader) else {
        return false;
    };
    let ours = match stat(leader) {
        Some(s) if s.start_time == start_time => true,
        // The pid now names another process: the group is not ours any more.
        Some(_) => false,
        None => group_has_members(leader),
    };
    ours && kill_process_group(pid, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (my (odd) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.start_time, 987654);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn sees_itself() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert!(alive(me, s.start_time));
        assert!(!alive(me, s.start_time + 1));
    }
}
