//! What several commands print: tables and a deployment's events.

use serde_json::Value;

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
pub(crate) fn print_event(ev: &Value) {
    let k = &ev["kind"];
    if k["kind"] == "state" {
        let to = &k["to"];
        let extra = to["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!("==> {}{extra}", to["state"].as_str().unwrap_or("?"));
    } else {
        println!("    {}", k["text"].as_str().unwrap_or(""));
    }
}
