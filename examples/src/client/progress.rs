//! The upload progress bar of `wharf deploy`.

/// Upload chunk size: the progress bar moves once per chunk.
pub(super) const UPLOAD_CHUNK: usize = 64 * 1024;

/// A hand-drawn upload progress bar on stderr, redrawn in place (`\r`) whenever the
/// percentage changes. Only made when stderr is a terminal ([`Progress::on_tty`]):
/// logs and pipes get no control characters.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    shown: Option<u64>,
}

impl Progress {
    /// A bar for uploading `total` bytes of `label`, if stderr is a terminal.
    pub fn on_tty(label: &str, total: u64) -> Option<Progress> {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| Progress {
            label: label.to_owned(),
            total,
            shown: None,
        })
    }

    /// Records that `sent` bytes are out, redrawing the bar if it moved.
    pub fn update(&mut self, sent: u64) {
        use std::io::Write;
        let pct = percent(sent, self.total);
        if self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let mut err = std::io::stderr().lock();
        // `\x1b[K` clears what a longer earlier draw left at the end of the line.
        let _ = write!(err, "\r{}\x1b[K", bar(&self.label, sent, self.total, 30));
        if sent >= self.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

fn percent(sent: u64, total: u64) -> u64 {
    // Nothing to send is all sent.
    (sent.min(total) * 100).checked_div(total).unwrap_or(100)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One line of the bar: `label [#####.....]  50%  1.0 KiB / 2.0 KiB`.
pub fn bar(label: &str, sent: u64, total: u64, width: usize) -> String {
    let pct = percent(sent, total);
    let filled = (pct as usize * width) / 100;
    format!(
        "{label} [{}{}] {pct:>3}%  {} / {}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        human(sent.min(total)),
        human(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_fills_with_the_bytes_sent() {
        assert_eq!(
            bar("web", 0, 2048, 10),
            "web [..........]   0%  0 B / 2.0 KiB"
        );
        assert_eq!(
            bar("web", 1024, 2048, 10),
            "web [#####.....]  50%  1.0 KiB / 2.0 KiB"
        );
        assert_eq!(
            bar("web", 4096, 2048, 10),
            "web [##########] 100%  2.0 KiB / 2.0 KiB"
        );
        assert_eq!(bar("e", 0, 0, 4), "e [####] 100%  0 B / 0 B");
    }
}
