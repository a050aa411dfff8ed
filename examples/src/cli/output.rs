//! What several commands print: tables and a deployment's events.

use wharf_core::{DeploymentState, Event, EventKind};

/// Prints `rows` under `header` in left-aligned columns.
pub(crate) fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &all {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Prints one event of a deployment: `==> state: reason` or an indented log line.
pub(crate) fn print_event(ev: &Event) {
    match &ev.kind {
        EventKind::State { to, .. } => println!("==> {}", printable(&state_line(to))),
        EventKind::Log(line) => println!("    {}", printable(&line.text)),
    }
}

/// `text` safe for a terminal: control characters (escape sequences that would move
/// the cursor, retitle the window or rewrite what was printed before) are shown as
/// `\xNN` instead of acted on. Build and app output is anyone's.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into();
    }
    text.chars()
        .map(|c| match c {
            '\t' => "\t".to_owned(),
            c if c.is_control() => format!("\\x{:02x}", u32::from(c)),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// A state's name, and its reason if it has one: `failed: no Dockerfile`.
pub(crate) fn state_line(state: &DeploymentState) -> String {
    match state {
        DeploymentState::Failed { reason, .. } | DeploymentState::Skipped { reason } => {
            format!("{}: {reason}", state.name())
        }
        _ => state.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_shows_its_reason_when_it_has_one() {
        assert_eq!(state_line(&DeploymentState::Live), "live");
        let failed = DeploymentState::Failed {
            step: wharf_core::Step::Building,
            reason: "no Dockerfile".into(),
        };
        assert_eq!(state_line(&failed), "failed: no Dockerfile");
        let skipped = DeploymentState::Skipped {
            reason: "db failed".into(),
        };
        assert_eq!(state_line(&skipped), "skipped: db failed");
    }

    #[test]
    fn escape_sequences_are_shown_not_acted_on() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(printable("\u{1b}]0;owned\u{7}hi"), "\\x1b]0;owned\\x07hi");
        assert_eq!(printable("a\rb\u{9b}c"), "a\\x0db\\x9bc");
    }
}
