//! Sources: a topic read with typed columns decoded from its JSON values (and keys).
//!
//! `CREATE SOURCE orders (id BIGINT KEY, amount DECIMAL(10,2), _timestamp TIMESTAMP)
//! WITH (topic = 'orders', format = 'json')` names a topic's values' fields as columns.
//! Columns named after the record's own fields (`_partition`, `_offset`, `_timestamp`,
//! `_key`, `_value`, `_headers`) are read from the record, and filters on them narrow
//! what is read just as on the raw topic. A record that does not decode (not JSON, not
//! an object, a field that does not fit its column) yields NULLs or is skipped, as the
//! source's `on_error` option says, and is counted; it never fails a query.
//!
//! The definition is stored as JSON in the cluster's catalog (see [`Topics`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{DataType as SqlDataType, ExactNumberInfo, Ident, TimezoneInfo, Value};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use serde::{Deserialize, Serialize};

use crate::error::{self, SqlError};
use crate::json::{FieldRows, JsonFields};
use crate::topic_table::{self, raw_schema, HEADERS, KEY, OFFSET, PARTITION, TIMESTAMP, VALUE};
use crate::topics::Topics;

/// Arrow's canonical extension name for JSON text, on the fields of JSON columns.
pub const JSON_EXTENSION: &str = "arrow.json";
const EXTENSION_KEY: &str = "ARROW:extension:name";

/// The column types a source can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    /// The record's headers (only for a `_headers` column).
    Headers,
}

impl SqlType {
    /// The Arrow type of a column of this type. Timestamps are in milliseconds, like a
    /// record's own timestamp; TIMESTAMPTZ is kept in UTC.
    pub fn arrow(self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            SqlType::Text | SqlType::Json => DataType::Utf8,
            SqlType::Bytea => DataType::Binary,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            SqlType::Headers => raw_schema().field(HEADERS).data_type().clone(),
        }
    }

    fn field(self, name: &str) -> Field {
        let f = Field::new(name, self.arrow(), true);
        if self == SqlType::Json {
            f.with_metadata(HashMap::from([(EXTENSION_KEY.to_string(), JSON_EXTENSION.to_string())]))
        } else {
            f
        }
    }

    fn from_sql(t: &SqlDataType) -> Option<SqlType> {
        use SqlDataType as D;
        Some(match t {
            D::Bool | D::Boolean => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Int,
            D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::Double(_) | D::DoublePrecision | D::Float8 | D::Float(_) => SqlType::Double,
            D::Decimal(info) | D::Numeric(info) | D::Dec(info) => {
                let (precision, scale) = match *info {
                    ExactNumberInfo::None => (38, 10),
                    ExactNumberInfo::Precision(p) => (p, 0),
                    ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
                };
                if !(1..=38).contains(&precision) || scale < 0 || scale as u64 > precision {
                    return None;
                }
                SqlType::Decimal { precision: precision as u8, scale: scale as i8 }
            }
            D::Text | D::Varchar(_) | D::CharacterVarying(_) | D::CharVarying(_) | D::String(_) => SqlType::Text,
            D::Char(_) | D::Character(_) => SqlType::Text,
            D::Bytea => SqlType::Bytea,
            D::Date => SqlType::Date,
            D::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Timestamp,
            D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::TimestampTz,
            D::JSON | D::JSONB => SqlType::Json,
            _ => return None,
        })
    }

    /// As SQL writes it.
    pub fn sql_name(self) -> String {
        match self {
            SqlType::Boolean => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Text => "text".into(),
            SqlType::Bytea => "bytea".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp".into(),
            SqlType::TimestampTz => "timestamptz".into(),
            SqlType::Json => "json".into(),
            SqlType::Headers => "headers".into(),
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A field of the JSON value.
    Value,
    /// The key (a field of a JSON key, or the whole key read as text).
    Key,
    /// The record itself: `_partition`, `_offset`, ... (the raw column of that index).
    Record(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: SqlType,
    pub origin: Origin,
}

/// How a source's keys are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// The key is a JSON object; KEY columns are its fields.
    Json,
    /// The key is UTF-8 text; the one KEY column is it, as its type.
    String,
}

/// What happens to a record that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// A row with NULL in every decoded column (record columns are still filled).
    Null,
    /// No row.
    Skip,
}

/// A source as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDef {
    pub name: String,
    pub topic: String,
    pub columns: Vec<ColumnDef>,
    pub key_format: Option<KeyFormat>,
    /// The column that holds each record's event time.
    pub timestamp: Option<String>,
    pub on_error: OnError,
}

impl SourceDef {
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().map(|c| c.sql_type.field(&c.name)).collect::<Vec<_>>()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<SourceDef> {
        serde_json::from_str(text).ok()
    }

    /// The `WITH` options as written back.
    pub fn options(&self) -> String {
        let mut o = vec![format!("topic = '{}'", self.topic), "format = 'json'".to_string()];
        match self.key_format {
            Some(KeyFormat::Json) => o.push("key_format = 'json'".into()),
            Some(KeyFormat::String) => o.push("key_format = 'string'".into()),
            None => {}
        }
        if let Some(t) = &self.timestamp {
            o.push(format!("timestamp = '{t}'"));
        }
        o.push(format!("on_error = '{}'", if self.on_error == OnError::Null { "null" } else { "skip" }));
        o.join(", ")
    }
}

/// The 1-based character position of a token in `sql`.
fn at(sql: &str, token: &TokenWithSpan) -> Option<usize> {
    let s = token.span.start;
    if s.line == 0 {
        return Some(sql.trim_end().chars().count() + 1);
    }
    error::char_position(sql, s.line as usize, s.column as usize)
}

fn parse_err(e: datafusion::sql::sqlparser::parser::ParserError, sql: &str) -> SqlError {
    SqlError::from_datafusion(DataFusionError::SQL(Box::new(e), None), sql)
}

/// A name as SQL folds it: unquoted names are lower-cased.
pub(crate) fn ident_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Whether the parser is at `CREATE SOURCE` (without consuming anything).
pub(crate) fn at_create_source(p: &Parser) -> bool {
    word_at(p, 0, "create") && word_at(p, 1, "source")
}

/// Whether the parser is at `DROP SOURCE`.
pub(crate) fn at_drop_source(p: &Parser) -> bool {
    word_at(p, 0, "drop") && word_at(p, 1, "source")
}

fn word_at(p: &Parser, n: usize, word: &str) -> bool {
    matches!(&p.peek_nth_token_ref(n).token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// `CREATE SOURCE [IF NOT EXISTS] name (col type [KEY], ...) WITH (option = 'value', ...)`;
/// the parser is at `CREATE`. Checks everything that does not need the catalog.
pub(crate) fn parse_create(p: &mut Parser, sql: &str) -> Result<(SourceDef, bool), SqlError> {
    p.next_token();
    p.next_token();
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name_token = p.peek_token();
    let name = ident_name(&p.parse_identifier().map_err(|e| parse_err(e, sql))?);
    p.expect_token(&Token::LParen).map_err(|e| parse_err(e, sql))?;
    let mut columns: Vec<ColumnDef> = Vec::new();
    let raw = raw_schema();
    loop {
        let col_token = p.peek_token();
        let col = ident_name(&p.parse_identifier().map_err(|e| parse_err(e, sql))?);
        let type_token = p.peek_token();
        let sql_type = p.parse_data_type().map_err(|e| parse_err(e, sql))?;
        let key = p.parse_keyword(Keyword::KEY);
        if columns.iter().any(|c| c.name == col) {
            return Err(SqlError::new(
                error::DUPLICATE_COLUMN,
                format!("column \"{col}\" specified more than once"),
                at(sql, &col_token),
            ));
        }
        let (origin, sql_type) = match raw.index_of(&col) {
            Ok(index) => {
                let expected = match index {
                    PARTITION => SqlType::Int,
                    OFFSET => SqlType::BigInt,
                    TIMESTAMP => SqlType::Timestamp,
                    KEY | VALUE => SqlType::Bytea,
                    _ => SqlType::Headers,
                };
                if index != HEADERS && SqlType::from_sql(&sql_type) != Some(expected) {
                    return Err(SqlError::new(
                        error::DATATYPE_MISMATCH,
                        format!("column \"{col}\" is the record's own and has type {}", expected.sql_name()),
                        at(sql, &type_token),
                    ));
                }
                if key {
                    return Err(SqlError::new(
                        error::SYNTAX_ERROR,
                        format!("column \"{col}\" is the record's own and cannot be a KEY column"),
                        at(sql, &col_token),
                    ));
                }
                (Origin::Record(index), expected)
            }
            Err(_) => {
                let Some(t) = SqlType::from_sql(&sql_type) else {
                    return Err(SqlError::new(
                        error::FEATURE_NOT_SUPPORTED,
                        format!(
                            "type {sql_type} is not supported for source columns (BOOLEAN, SMALLINT, INT, BIGINT, REAL, \
                             DOUBLE, DECIMAL(p,s) with p <= 38, TEXT, VARCHAR, BYTEA, DATE, TIMESTAMP, TIMESTAMPTZ, JSON)"
                        ),
                        at(sql, &type_token),
                    ));
                };
                (if key { Origin::Key } else { Origin::Value }, t)
            }
        };
        columns.push(ColumnDef { name: col, sql_type, origin });
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(|e| parse_err(e, sql))?;
        break;
    }
    let with_token = p.peek_token();
    if !p.parse_keyword(Keyword::WITH) {
        return Err(SqlError::new(
            error::SYNTAX_ERROR,
            "syntax error: expected WITH (topic = '...', format = 'json') after the columns",
            at(sql, &with_token),
        ));
    }
    p.expect_token(&Token::LParen).map_err(|e| parse_err(e, sql))?;
    // Each option's value, and where its name and its value are.
    let mut options: BTreeMap<String, (String, TokenWithSpan, TokenWithSpan)> = BTreeMap::new();
    loop {
        let key_token = p.peek_token();
        let key = ident_name(&p.parse_identifier().map_err(|e| parse_err(e, sql))?);
        p.expect_token(&Token::Eq).map_err(|e| parse_err(e, sql))?;
        let value_token = p.peek_token();
        let value = match p.parse_value().map_err(|e| parse_err(e, sql))?.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
            Value::Number(n, _) => n,
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(SqlError::new(
                    error::SYNTAX_ERROR,
                    format!("syntax error: option {key} takes a quoted string, not {other}"),
                    at(sql, &value_token),
                ))
            }
        };
        if options.insert(key.clone(), (value, key_token.clone(), value_token)).is_some() {
            return Err(SqlError::new(
                error::SYNTAX_ERROR,
                format!("option {key} given more than once"),
                at(sql, &key_token),
            ));
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen).map_err(|e| parse_err(e, sql))?;
        break;
    }
    let option_error = |key: &str, msg: String| {
        let position = options.get(key).and_then(|(_, _, t)| at(sql, t)).or_else(|| at(sql, &with_token));
        SqlError::new(error::INVALID_PARAMETER, msg, position)
    };
    for (key, (_, token, _)) in &options {
        if !["topic", "format", "value_format", "key_format", "timestamp", "on_error"].contains(&key.as_str()) {
            return Err(SqlError::new(
                error::INVALID_PARAMETER,
                format!("unknown source option \"{key}\" (options: topic, format, key_format, timestamp, on_error)"),
                at(sql, token),
            ));
        }
    }
    let get = |k: &str| options.get(k).map(|(v, _, _)| v.clone());
    let Some(topic) = get("topic") else {
        return Err(SqlError::new(
            error::INVALID_PARAMETER,
            "a source needs the option topic = '...'",
            at(sql, &with_token),
        ));
    };
    let format_key = if options.contains_key("value_format") { "value_format" } else { "format" };
    match get(format_key).map(|f| f.to_lowercase()) {
        Some(f) if f == "json" => {}
        Some(f) => return Err(option_error(format_key, format!("format '{f}' is not supported (only 'json')"))),
        None => return Err(option_error("topic", "a source needs the option format = 'json'".into())),
    }
    let key_columns = columns.iter().filter(|c| c.origin == Origin::Key).count();
    let key_format = match get("key_format").map(|f| f.to_lowercase()) {
        Some(f) if f == "json" => Some(KeyFormat::Json),
        Some(f) if f == "string" || f == "kafka" => Some(KeyFormat::String),
        Some(f) => {
            return Err(option_error("key_format", format!("key format '{f}' is not supported ('json' or 'string')")))
        }
        None if key_columns > 0 => Some(KeyFormat::String),
        None => None,
    };
    if key_format == Some(KeyFormat::String) && key_columns != 1 {
        return Err(option_error(
            "key_format",
            format!("key_format 'string' reads the whole key into one KEY column; {key_columns} are declared"),
        ));
    }
    if key_columns == 0 && key_format.is_some() {
        return Err(option_error("key_format", "key_format is given but no column is declared KEY".into()));
    }
    let timestamp = get("timestamp").map(|t| t.to_lowercase());
    if let Some(t) = &timestamp {
        match columns.iter().find(|c| &c.name == t) {
            Some(c) if matches!(c.sql_type, SqlType::Timestamp | SqlType::TimestampTz | SqlType::BigInt) => {}
            Some(c) => {
                return Err(option_error(
                    "timestamp",
                    format!(
                        "timestamp column \"{t}\" has type {}; it must be TIMESTAMP, TIMESTAMPTZ or BIGINT",
                        c.sql_type.sql_name()
                    ),
                ))
            }
            None => {
                return Err(option_error(
                    "timestamp",
                    format!("timestamp column \"{t}\" is not a column of the source"),
                ))
            }
        }
    }
    let on_error = match get("on_error").map(|v| v.to_lowercase()) {
        None => OnError::Null,
        Some(v) if v == "null" => OnError::Null,
        Some(v) if v == "skip" => OnError::Skip,
        Some(v) => return Err(option_error("on_error", format!("on_error '{v}' is not one of 'null', 'skip'"))),
    };
    if name.is_empty() {
        return Err(SqlError::new(error::SYNTAX_ERROR, "a source needs a name", at(sql, &name_token)));
    }
    Ok((SourceDef { name, topic, columns, key_format, timestamp, on_error }, if_not_exists))
}

/// `DROP SOURCE [IF EXISTS] name`; the parser is at `DROP`.
pub(crate) fn parse_drop(p: &mut Parser, sql: &str) -> Result<(String, bool, Option<usize>), SqlError> {
    p.next_token();
    p.next_token();
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let token = p.peek_token();
    let name = ident_name(&p.parse_identifier().map_err(|e| parse_err(e, sql))?);
    Ok((name, if_exists, at(sql, &token)))
}

/// Counts of one source, since the node started.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub undecodable: AtomicU64,
}

/// A source as a table.
pub struct SourceTable {
    def: Arc<SourceDef>,
    topics: Arc<dyn Topics>,
    schema: SchemaRef,
    stats: Arc<SourceStats>,
}

impl fmt::Debug for SourceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceTable").field("name", &self.def.name).finish()
    }
}

impl SourceTable {
    pub fn new(def: Arc<SourceDef>, topics: Arc<dyn Topics>, stats: Arc<SourceStats>) -> Self {
        SourceTable { schema: def.schema(), def, topics, stats }
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Only the record's own columns narrow what is read; they carry their raw names.
        Ok(filters.iter().map(|f| topic_table::pushdown(f)).collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.topics.partition_count(&self.def.topic).is_none() {
            return Err(DataFusionError::Plan(format!(
                "topic '{}' of source '{}' does not exist",
                self.def.topic, self.def.name
            )));
        }
        let columns: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let decoder = SourceDecoder::new(&self.def, &columns, self.stats.clone())?;
        // Skipping a record changes the row count: a limit is only safe without it.
        let limit = if self.def.on_error == OnError::Skip { None } else { limit };
        let raw = decoder.raw_columns.clone();
        topic_table::scan(state, &self.def.topic, &self.topics, filters, raw, limit, Some(Arc::new(decoder)))
    }
}

/// What one output column of a source scan is made from.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// A raw column (its position among the raw columns read).
    Raw(usize),
    /// A decoded value column (its position among the value columns built).
    Value(usize),
    /// A decoded key column (its position among the key columns built).
    Key(usize),
}

/// How a source's records become its rows: which of the record's own columns a scan
/// reads, which fields of the value and key it decodes, and how they are put together.
pub(crate) struct SourceDecoder {
    pub name: String,
    pub output: SchemaRef,
    /// The record's own columns a scan reads for this source, in order.
    pub raw_columns: Vec<usize>,
    /// A record that does not decode gives no row (else a row of NULLs).
    pub skip: bool,
    parts: Vec<Part>,
    /// The value's fields, and which of them are projected.
    value: Option<(JsonFields, Vec<bool>)>,
    /// The key's fields (the whole key as text when `key_text`), and which are projected.
    key: Option<(JsonFields, Vec<bool>)>,
    key_text: bool,
    stats: Arc<SourceStats>,
}

impl fmt::Debug for SourceDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceDecoder").field("name", &self.name).finish()
    }
}

impl SourceDecoder {
    fn new(def: &SourceDef, projection: &[usize], stats: Arc<SourceStats>) -> Result<Self> {
        // Whether a record decodes is a property of the record, not of the query: every
        // value and key field is read and checked, projected or not, so that a record is
        // NULLs (or no row) in every query alike. Only projected ones are built.
        let of = |origin: Origin| -> Vec<&ColumnDef> { def.columns.iter().filter(|c| c.origin == origin).collect() };
        let (value_cols, key_cols) = (of(Origin::Value), of(Origin::Key));
        let projected = |c: &ColumnDef| projection.iter().any(|&i| def.columns[i].name == c.name);
        let wanted = |cols: &[&ColumnDef]| -> Vec<bool> { cols.iter().map(|c| projected(c)).collect() };
        // A decoded column's place among the columns built: the projected ones before it.
        let built_before = |cols: &[&ColumnDef], name: &str| -> usize {
            cols.iter().take_while(|c| c.name != name).filter(|c| projected(c)).count()
        };
        let mut raw_columns = Vec::new();
        let mut parts = Vec::with_capacity(projection.len());
        for &i in projection {
            let c = &def.columns[i];
            parts.push(match c.origin {
                Origin::Record(r) => {
                    raw_columns.push(r);
                    Part::Raw(raw_columns.len() - 1)
                }
                Origin::Value => Part::Value(built_before(&value_cols, &c.name)),
                Origin::Key => Part::Key(built_before(&key_cols, &c.name)),
            });
        }
        let fields = |cols: &[&ColumnDef]| JsonFields::new(cols.iter().map(|c| (c.name.clone(), c.sql_type)));
        let value = (!value_cols.is_empty()).then(|| (fields(&value_cols), wanted(&value_cols)));
        let key = (!key_cols.is_empty()).then(|| (fields(&key_cols), wanted(&key_cols)));
        let key_text = def.key_format != Some(KeyFormat::Json);
        let output = Arc::new(def.schema().project(projection)?);
        Ok(SourceDecoder {
            name: def.name.clone(),
            output,
            raw_columns,
            skip: def.on_error == OnError::Skip,
            parts,
            value,
            key,
            key_text,
            stats,
        })
    }

    /// Empty rows to decode records into.
    pub fn rows(&self) -> SourceRows {
        SourceRows {
            value: self.value.as_ref().map(|(f, w)| FieldRows::new(f.clone(), w)),
            key: self.key.as_ref().map(|(f, w)| FieldRows::new(f.clone(), w)),
            key_text: self.key_text,
            undecodable: 0,
        }
    }

    /// The source's batch of the record columns read (`raw`, in the order of
    /// `raw_columns`) and the rows decoded alongside them.
    pub fn finish(&self, raw: &RecordBatch, rows: &mut SourceRows) -> Result<RecordBatch> {
        let value = match &mut rows.value {
            Some(v) => v.finish()?,
            None => Vec::new(),
        };
        let key = match &mut rows.key {
            Some(k) => k.finish()?,
            None => Vec::new(),
        };
        let columns: Vec<ArrayRef> = self
            .parts
            .iter()
            .map(|p| match *p {
                Part::Raw(i) => raw.column(i).clone(),
                Part::Value(i) => value[i].clone(),
                Part::Key(i) => key[i].clone(),
            })
            .collect();
        let undecodable = std::mem::take(&mut rows.undecodable);
        if undecodable > 0 {
            self.stats.undecodable.fetch_add(undecodable, Ordering::Relaxed);
            metrics::counter!("quarry_source_undecodable_records_total", "source" => self.name.clone())
                .increment(undecodable);
        }
        Ok(RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(raw.num_rows())),
        )?)
    }
}

/// A source's decoded columns being built, record by record.
pub(crate) struct SourceRows {
    value: Option<FieldRows>,
    key: Option<FieldRows>,
    key_text: bool,
    /// Records that did not decode since the last batch.
    pub undecodable: u64,
}

impl SourceRows {
    /// Reads one record's key and value; whether both decode. Then call [`Self::append`]
    /// or [`Self::append_nulls`] (or neither, to leave the record out).
    pub fn read(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        let value_ok = self.value.as_mut().is_none_or(|v| v.read(value));
        let key_ok = match &mut self.key {
            Some(k) if self.key_text => k.read_text(key),
            Some(k) => k.read(key),
            None => true,
        };
        value_ok && key_ok
    }

    pub fn append(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        if let Some(v) = &mut self.value {
            v.append(value);
        }
        if let Some(k) = &mut self.key {
            k.append(key);
        }
    }

    pub fn append_nulls(&mut self) {
        for rows in [&mut self.value, &mut self.key].into_iter().flatten() {
            rows.append_nulls();
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use protocol::kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn create(sql: &str) -> Result<SourceDef, SqlError> {
        let dialect = PostgreSqlDialect {};
        let mut p = Parser::new(&dialect).try_with_sql(sql).unwrap();
        assert!(at_create_source(&p));
        parse_create(&mut p, sql).map(|(d, _)| d)
    }

    #[test]
    fn create_source_reads_columns_keys_and_options() {
        let def = create(
            "CREATE SOURCE Orders (id BIGINT KEY, \"userId\" TEXT, amount DECIMAL(10,2), at TIMESTAMPTZ, \
             _offset BIGINT, doc JSON) WITH (topic = 'orders', format = 'json', timestamp = 'at', on_error = 'skip')",
        )
        .unwrap();
        assert_eq!(def.name, "orders");
        let cols: Vec<(&str, SqlType, Origin)> =
            def.columns.iter().map(|c| (c.name.as_str(), c.sql_type, c.origin)).collect();
        assert_eq!(
            cols,
            vec![
                ("id", SqlType::BigInt, Origin::Key),
                ("userId", SqlType::Text, Origin::Value),
                ("amount", SqlType::Decimal { precision: 10, scale: 2 }, Origin::Value),
                ("at", SqlType::TimestampTz, Origin::Value),
                ("_offset", SqlType::BigInt, Origin::Record(1)),
                ("doc", SqlType::Json, Origin::Value),
            ]
        );
        assert_eq!(def.key_format, Some(KeyFormat::String));
        assert_eq!(def.on_error, OnError::Skip);
        assert_eq!(SourceDef::from_json(&def.to_json()), Some(def));
    }

    #[test]
    fn create_source_errors_name_the_problem_and_where() {
        let e = create("CREATE SOURCE s (a INT, a TEXT) WITH (topic='t', format='json')").unwrap_err();
        assert_eq!((e.code, e.position), (error::DUPLICATE_COLUMN, Some(25)));
        let e = create("CREATE SOURCE s (a POINT) WITH (topic='t', format='json')").unwrap_err();
        assert_eq!((e.code, e.position), (error::FEATURE_NOT_SUPPORTED, Some(20)));
        let e = create("CREATE SOURCE s (a INT) WITH (topic='t', format='avro')").unwrap_err();
        assert_eq!((e.code, e.position), (error::INVALID_PARAMETER, Some(49)));
        let e = create("CREATE SOURCE s (a INT) WITH (topic='t', format='json', colour='red')").unwrap_err();
        assert_eq!((e.code, e.position), (error::INVALID_PARAMETER, Some(57)));
        let e = create("CREATE SOURCE s (_offset INT) WITH (topic='t', format='json')").unwrap_err();
        assert_eq!((e.code, e.position), (error::DATATYPE_MISMATCH, Some(26)));
        let e = create("CREATE SOURCE s (a INT) WITH (format='json')").unwrap_err();
        assert_eq!(e.code, error::INVALID_PARAMETER);
        let e = create("CREATE SOURCE s (a INT").unwrap_err();
        assert_eq!((e.code, e.position), (error::SYNTAX_ERROR, Some(23)));
    }

    #[test]
    fn records_that_do_not_decode_are_nulls_or_skipped_and_counted() {
        let mut def = create(
            "CREATE SOURCE s (_offset BIGINT, n INT, price DECIMAL(6,2), day DATE, doc JSON) \
             WITH (topic = 't', format = 'json')",
        )
        .unwrap();
        let values: [Option<&[u8]>; 6] = [
            Some(br#"{"n": 1, "price": 12.34, "day": "2024-02-29", "doc": {"a": [1, 2]}}"#),
            Some(b"not json"),
            Some(br#"{"n": "many"}"#),
            None,
            Some(br#"{"n": 5, "extra": true}"#),
            Some(br#"{"n": 6} {"n": 7}"#),
        ];
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1000 + i as i64,
                key: None,
                value: v.map(bytes::Bytes::copy_from_slice),
                headers: Default::default(),
            })
            .collect();
        let mut batch = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::Lz4 },
        )
        .unwrap();
        for skip in [false, true] {
            def.on_error = if skip { OnError::Skip } else { OnError::Null };
            let stats = Arc::new(SourceStats::default());
            let d = Arc::new(SourceDecoder::new(&def, &[0, 1, 2, 3, 4], stats.clone()).unwrap());
            assert_eq!(d.raw_columns, vec![OFFSET]);
            let raw = Arc::new(raw_schema().project(&d.raw_columns).unwrap());
            let mut sink = topic_table::Sink::new(&d.raw_columns, raw, Some(d.clone()));
            let range = topic_table::PartitionRange { partition: 0, start: 0, end: 6 };
            let read = datafusion::physical_plan::metrics::Count::new();
            assert_eq!(topic_table::decode_into(&batch, &range, 0, (None, None), &mut sink, &read), 6);
            let out = sink.finish().unwrap();
            assert_eq!(stats.undecodable.load(Ordering::Relaxed), 3);
            let text: Vec<String> = (0..out.num_rows())
                .map(|r| {
                    out.columns()
                        .iter()
                        .map(|c| crate::values::pg_text(c, r).unwrap_or_else(|| "NULL".into()))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            let mut expected = vec![
                "0|1|12.34|2024-02-29|{\"a\":[1,2]}",
                "1|NULL|NULL|NULL|NULL",
                "2|NULL|NULL|NULL|NULL",
                "3|NULL|NULL|NULL|NULL",
                "4|5|NULL|NULL|NULL",
                "5|NULL|NULL|NULL|NULL",
            ];
            if skip {
                expected = vec![expected[0], expected[3], expected[4]];
            }
            assert_eq!(text, expected, "skip = {skip}");
        }
    }
}
