//! Log lines a test hands out a sink for and reads back.

use std::sync::{Arc, Mutex};

use wharf_core::{LogLine, LogSink};

/// Keeps every line sent to its [`sink`](KeptLogs::sink)s, for the test to read back.
///
/// ```
/// use wharf_core::LogStream;
/// let logs = wharf_testkit::KeptLogs::new();
/// logs.sink().send(LogStream::Build, "compiling");
/// assert_eq!(logs.texts(), ["compiling"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct KeptLogs(Arc<Mutex<Vec<LogLine>>>);

impl KeptLogs {
    /// Nothing kept yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink whose lines are kept here.
    pub fn sink(&self) -> LogSink {
        let lines = self.0.clone();
        LogSink::from_fn(move |line| lines.lock().unwrap_or_else(|p| p.into_inner()).push(line))
    }

    /// The lines kept so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The texts of the lines kept so far.
    pub fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|l| l.text).collect()
    }
}
