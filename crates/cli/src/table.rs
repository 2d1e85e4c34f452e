//! Human output for the operator commands: left-aligned columns as wide as their widest
//! cell, two spaces apart, and `name: value` lists for one resource. No dependency, so
//! what an operator sees is written down here.

use std::fmt::Write as _;

use serde::Serialize;

/// A table built row by row and printed at once.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header line.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let width = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `name: value` lines, the names aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(n, _)| n.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let label = format!("{name}:");
        let _ = writeln!(out, "{label:<width$} {value}");
    }
    out
}

/// How a serialized enum or id reads in JSON, without its quotes.
pub fn label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// `account/org/project`, as far as it goes.
pub fn scope<A: std::fmt::Display>(account: &A, org: Option<&A>, project: Option<&A>) -> String {
    let mut out = account.to_string();
    for part in [org, project].into_iter().flatten() {
        out.push('/');
        out.push_str(&part.to_string());
    }
    out
}

/// A list of displayable things, comma-separated, or `-` when empty.
pub fn list<I>(items: I) -> String
where
    I: IntoIterator,
    I::Item: std::fmt::Display,
{
    let joined = items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    if joined.is_empty() { "-".to_owned() } else { joined }
}

/// An optional value, or `-`.
pub fn opt<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["1".into(), "alpha".into()]);
        t.row(vec!["12345".into(), "b".into()]);
        assert_eq!(t.render(), "ID     NAME\n1      alpha\n12345  b\n");
    }
}
