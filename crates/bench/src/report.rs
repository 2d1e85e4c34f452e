//! How results are shown: a table on stdout, and a JSON file per scenario and store.

use std::path::{Path, PathBuf};

use crate::BenchError;

/// A table printed with aligned columns.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        // A short row (a size skipped, with why) runs its last cell on unaligned, so a
        // long explanation does not widen the column it starts in.
        for row in self.rows.iter().filter(|row| row.len() >= columns) {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let last = cells.len().saturating_sub(1);
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, width))| {
                    if i == last && cells.len() < columns {
                        cell.clone()
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = format!("\n{}\n", self.title);
        let header = line(&self.headers);
        out.push_str(&header);
        out.push('\n');
        out.push_str(&"-".repeat(header.chars().count()));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(note);
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// A number with at most `decimals` decimals, for a table cell.
pub fn num(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}")
}

/// Writes `value` as `<dir>/<scenario>-<store>.json` and returns the path.
pub fn write_json(dir: &Path, scenario: &str, store: &str, value: &serde_json::Value) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{scenario}-{store}.json"));
    let text = serde_json::to_string_pretty(value).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new("T", &["a", "long header"]);
        t.row(vec!["12345".into(), "1".into()]);
        t.row(vec!["skipped: a long reason".into()]);
        t.note("n");
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "T");
        assert_eq!(lines[2], "    a  long header");
        assert_eq!(lines[4], "12345            1");
        assert_eq!(lines[5], "skipped: a long reason");
        assert_eq!(lines[6], "n");
    }
}
