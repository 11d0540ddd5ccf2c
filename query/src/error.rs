//! SQL errors as PostgreSQL reports them: a SQLSTATE code, a message that names the
//! problem, and where in the statement it is (a 1-based character position).

use datafusion::common::{DataFusionError, SchemaError};

pub const SYNTAX_ERROR: &str = "42601";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const UNDEFINED_COLUMN: &str = "42703";
pub const AMBIGUOUS_COLUMN: &str = "42702";
pub const DUPLICATE_OBJECT: &str = "42710";
pub const DUPLICATE_TABLE: &str = "42P07";
pub const DUPLICATE_COLUMN: &str = "42701";
pub const UNDEFINED_OBJECT: &str = "42704";
pub const INVALID_PARAMETER: &str = "22023";
pub const INVALID_BINARY: &str = "22P03";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const ACTIVE_TRANSACTION: &str = "25001";
pub const UNDEFINED_FUNCTION: &str = "42883";
pub const DATATYPE_MISMATCH: &str = "42804";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const DATA_EXCEPTION: &str = "22000";
pub const INVALID_TEXT: &str = "22P02";
pub const DIVISION_BY_ZERO: &str = "22012";
pub const INTERNAL_ERROR: &str = "XX000";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    /// 1-based character position in the statement text, when known.
    pub position: Option<usize>,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(p) = self.position {
            write!(f, " (at character {p})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>, position: Option<usize>) -> Self {
        SqlError { code, message: message.into(), position }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        SqlError::new(INTERNAL_ERROR, message, None)
    }

    /// Classifies a DataFusion error; `sql` is the text it came from, to find the
    /// position of the name it is about.
    pub fn from_datafusion(e: DataFusionError, sql: &str) -> Self {
        // DataFusion attaches where in the statement many planning errors are.
        let span = e
            .diagnostic()
            .and_then(|d| d.span)
            .filter(|s| s.start.line > 0)
            .and_then(|s| char_position(sql, s.start.line as usize, s.start.column as usize));
        let mut out = Self::classify(strip(e), sql);
        if span.is_some() {
            out.position = span;
        }
        out
    }

    fn classify(e: DataFusionError, sql: &str) -> Self {
        match &e {
            DataFusionError::SQL(parse, _) => {
                let text = parse.to_string();
                let position = match line_column(&text) {
                    Some((l, c)) => char_position(sql, l, c),
                    // The statement ended too soon: the position is its end.
                    None if text.contains("found: EOF") => Some(sql.trim_end().chars().count() + 1),
                    None => None,
                };
                SqlError::new(SYNTAX_ERROR, format!("syntax error: {}", clean(&text)), position)
            }
            DataFusionError::SchemaError(s, _) => {
                let (code, name) = match s.as_ref() {
                    SchemaError::FieldNotFound { field, .. } => (UNDEFINED_COLUMN, Some(field.name.clone())),
                    SchemaError::AmbiguousReference { field } => (AMBIGUOUS_COLUMN, Some(field.name.clone())),
                    SchemaError::DuplicateQualifiedField { name, .. }
                    | SchemaError::DuplicateUnqualifiedField { name } => (DUPLICATE_OBJECT, Some(name.clone())),
                };
                let position = name.and_then(|n| find_name(sql, &n));
                SqlError::new(code, clean(&e.to_string()), position)
            }
            DataFusionError::Plan(msg) => {
                let lower = msg.to_ascii_lowercase();
                if let Some(table) = quoted_after(msg, "table '").filter(|_| lower.contains("not found")) {
                    let name = table.rsplit('.').next().unwrap_or(&table).to_string();
                    SqlError::new(UNDEFINED_TABLE, format!("table \"{name}\" does not exist"), find_name(sql, &name))
                } else if lower.contains("invalid function") || lower.contains("no function matches") {
                    let name = quoted_after(msg, "function '").unwrap_or_default();
                    SqlError::new(UNDEFINED_FUNCTION, clean(msg), find_name(sql, &name))
                } else if lower.contains("cannot infer common") || lower.contains("coerc") || lower.contains("type") {
                    SqlError::new(DATATYPE_MISMATCH, clean(msg), None)
                } else {
                    SqlError::new(SYNTAX_ERROR, clean(msg), None)
                }
            }
            DataFusionError::NotImplemented(msg) => SqlError::new(FEATURE_NOT_SUPPORTED, clean(msg), None),
            DataFusionError::ArrowError(a, _) => {
                let text = a.to_string();
                let code = if text.contains("Divide by zero") {
                    DIVISION_BY_ZERO
                } else if text.contains("Cast error") || text.contains("Parser error") {
                    INVALID_TEXT
                } else {
                    DATA_EXCEPTION
                };
                SqlError::new(code, clean(&text), None)
            }
            DataFusionError::Execution(msg) => {
                let code = if msg.contains("Divide by zero") { DIVISION_BY_ZERO } else { DATA_EXCEPTION };
                SqlError::new(code, clean(msg), None)
            }
            other => SqlError::new(INTERNAL_ERROR, clean(&other.to_string()), None),
        }
    }
}

/// The error inside DataFusion's wrappers (context, shared, collections).
fn strip(e: DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::Context(_, inner) => strip(*inner),
        DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(inner) => strip(inner),
            Err(shared) => DataFusionError::Execution(shared.to_string()),
        },
        DataFusionError::Diagnostic(_, inner) => strip(*inner),
        DataFusionError::Collection(mut all) if !all.is_empty() => strip(all.remove(0)),
        other => other,
    }
}

/// A message without DataFusion's "Error during planning: " style prefixes and its
/// backtrace hint.
fn clean(text: &str) -> String {
    let mut t = text.trim();
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Execution error: ",
        "Arrow error: ",
        "ParserError(\"",
        "sql parser error: ",
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest;
        }
    }
    t.trim_end_matches("\")").to_string()
}

/// `(line, column)` from sqlparser's "... at Line: 1, Column: 8".
fn line_column(text: &str) -> Option<(usize, usize)> {
    let at = text.rfind("Line: ")?;
    let rest = &text[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// The 1-based character position of a line and column of `sql`.
pub(crate) fn char_position(sql: &str, line: usize, column: usize) -> Option<usize> {
    let mut position = 0;
    for (i, l) in sql.split('\n').enumerate() {
        if i + 1 == line {
            return Some(position + column);
        }
        position += l.chars().count() + 1;
    }
    None
}

/// The text between `marker` and the next quote.
fn quoted_after(msg: &str, marker: &str) -> Option<String> {
    let start = msg.find(marker)? + marker.len();
    let end = msg[start..].find('\'')?;
    Some(msg[start..start + end].to_string())
}

/// 1-based character position of the first whole-word, case-insensitive occurrence of
/// `name` in `sql`.
pub fn find_name(sql: &str, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    let hay = sql.to_lowercase();
    let needle = name.to_lowercase();
    let bytes = hay.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let start = from + i;
        let end = start + needle.len();
        let before_ok = start == 0 || !word(bytes[start - 1]);
        let after_ok = end >= bytes.len() || !word(bytes[end]);
        if before_ok && after_ok {
            return Some(hay[..start].chars().count() + 1);
        }
        from = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_sqlparser_lines_and_columns_and_names() {
        assert_eq!(line_column("Expected: end of statement, found: x at Line: 2, Column: 5"), Some((2, 5)));
        assert_eq!(char_position("select 1\nfrom x", 2, 6), Some(15));
        assert_eq!(find_name("select amount, amount_x from t", "amount_x"), Some(16));
        assert_eq!(find_name("select a from t", "b"), None);
    }
}
