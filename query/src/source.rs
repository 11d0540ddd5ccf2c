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
use base64::Engine as _;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
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

    /// Decoded from JSON by Arrow's reader (the others by serde_json).
    fn by_arrow(self) -> bool {
        !matches!(self, SqlType::Json | SqlType::Bytea | SqlType::Headers)
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
    /// A decoded value column (its position in the value decoder's fields).
    Value(usize),
    /// A decoded key column.
    Key(usize),
}

/// Turns batches of raw records into a source's typed rows.
pub(crate) struct SourceDecoder {
    pub name: String,
    pub output: SchemaRef,
    /// The raw columns a scan reads for this decoder, in order.
    pub raw_columns: Vec<usize>,
    parts: Vec<Part>,
    value: Option<JsonFields>,
    key: Option<KeyDecoder>,
    skip: bool,
    stats: Arc<SourceStats>,
}

impl fmt::Debug for SourceDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceDecoder").field("name", &self.name).finish()
    }
}

enum KeyDecoder {
    Json(JsonFields),
    /// The whole key as text, cast to this type.
    Text(DataType),
}

impl SourceDecoder {
    fn new(def: &SourceDef, projection: &[usize], stats: Arc<SourceStats>) -> Result<Self> {
        let skip = def.on_error == OnError::Skip;
        // Whether a record decodes is a property of the record, not of the query: every
        // value and key column is decoded, projected or not, so that a record is NULLs
        // (or no row) in every query alike.
        let decoded: Vec<&ColumnDef> =
            def.columns.iter().filter(|c| matches!(c.origin, Origin::Value | Origin::Key)).collect();
        let value_cols: Vec<&ColumnDef> = decoded.iter().copied().filter(|c| c.origin == Origin::Value).collect();
        let key_cols: Vec<&ColumnDef> = decoded.iter().copied().filter(|c| c.origin == Origin::Key).collect();
        let mut raw_columns = Vec::new();
        let mut raw_index = |raw: usize| -> usize {
            match raw_columns.iter().position(|r| *r == raw) {
                Some(i) => i,
                None => {
                    raw_columns.push(raw);
                    raw_columns.len() - 1
                }
            }
        };
        let mut parts = Vec::with_capacity(projection.len());
        for &i in projection {
            let c = &def.columns[i];
            parts.push(match c.origin {
                Origin::Record(r) => Part::Raw(raw_index(r)),
                Origin::Value => Part::Value(value_cols.iter().position(|v| v.name == c.name).unwrap_or(0)),
                Origin::Key => Part::Key(key_cols.iter().position(|v| v.name == c.name).unwrap_or(0)),
            });
        }
        let value = if value_cols.is_empty() {
            None
        } else {
            raw_index(VALUE);
            Some(JsonFields::new(&value_cols)?)
        };
        let key = if key_cols.is_empty() {
            None
        } else {
            raw_index(KEY);
            Some(match def.key_format {
                Some(KeyFormat::Json) => KeyDecoder::Json(JsonFields::new(&key_cols)?),
                _ => KeyDecoder::Text(key_cols[0].sql_type.arrow()),
            })
        };
        let output = Arc::new(def.schema().project(projection)?);
        Ok(SourceDecoder { name: def.name.clone(), output, raw_columns, parts, value, key, skip, stats })
    }

    /// The source's rows of a batch of raw records (the raw columns read, in order).
    pub fn decode(&self, raw: &RecordBatch) -> Result<RecordBatch> {
        let rows = raw.num_rows();
        let mut bad = vec![false; rows];
        let value_arrays = match &self.value {
            Some(v) => {
                let i = self.raw_columns.iter().position(|r| *r == VALUE).unwrap_or(0);
                v.decode(raw.column(i).as_binary::<i32>(), &mut bad)?
            }
            None => Vec::new(),
        };
        let key_arrays = match &self.key {
            Some(k) => {
                let keys = raw.column(self.raw_columns.iter().position(|r| *r == KEY).unwrap_or(0)).as_binary::<i32>();
                match k {
                    KeyDecoder::Json(f) => f.decode(keys, &mut bad)?,
                    KeyDecoder::Text(t) => vec![key_text(keys, t, &mut bad)?],
                }
            }
            None => Vec::new(),
        };
        let columns: Vec<ArrayRef> = self
            .parts
            .iter()
            .map(|p| match *p {
                Part::Raw(i) => raw.column(i).clone(),
                Part::Value(i) => value_arrays[i].clone(),
                Part::Key(i) => key_arrays[i].clone(),
            })
            .collect();
        let batch = RecordBatch::try_new_with_options(
            self.output.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        let undecodable = bad.iter().filter(|b| **b).count();
        if undecodable == 0 {
            return Ok(batch);
        }
        self.stats.undecodable.fetch_add(undecodable as u64, Ordering::Relaxed);
        metrics::counter!("quarry_source_undecodable_records_total", "source" => self.name.clone())
            .increment(undecodable as u64);
        if !self.skip {
            return Ok(batch);
        }
        let keep: BooleanArray = bad.iter().map(|b| Some(!b)).collect();
        Ok(filter_record_batch(&batch, &keep)?)
    }
}

/// The whole key as text, cast to `t`; a key that does not convert is undecodable.
fn key_text(keys: &BinaryArray, t: &DataType, bad: &mut [bool]) -> Result<ArrayRef> {
    let text: StringArray = keys
        .iter()
        .enumerate()
        .map(|(i, k)| match k.map(std::str::from_utf8) {
            Some(Ok(s)) => Some(s.trim().to_string()),
            Some(Err(_)) => {
                bad[i] = true;
                None
            }
            None => None,
        })
        .collect();
    if t == &DataType::Binary {
        return Ok(Arc::new(keys.clone()));
    }
    let out = cast_with_options(&text, t, &CastOptions { safe: true, ..Default::default() })?;
    for (i, b) in bad.iter_mut().enumerate() {
        if out.is_null(i) && !text.is_null(i) {
            *b = true;
        }
    }
    Ok(out)
}

/// Decodes the named fields of JSON objects into Arrow arrays.
struct JsonFields {
    /// The fields, in the order asked for.
    fields: Vec<(String, SqlType)>,
    /// The fields Arrow's JSON reader decodes, as a schema (for arrow-decoded fields).
    arrow_schema: SchemaRef,
}

impl JsonFields {
    fn new(columns: &[&ColumnDef]) -> Result<Self> {
        let fields: Vec<(String, SqlType)> = columns.iter().map(|c| (c.name.clone(), c.sql_type)).collect();
        let arrow_schema = Arc::new(Schema::new(
            fields
                .iter()
                .filter(|(_, t)| t.by_arrow())
                .map(|(n, t)| Field::new(n, t.arrow(), true))
                .collect::<Vec<_>>(),
        ));
        Ok(JsonFields { fields, arrow_schema })
    }

    fn reader(&self, rows: usize) -> Result<datafusion::arrow::json::reader::Decoder> {
        Ok(ReaderBuilder::new(self.arrow_schema.clone())
            .with_batch_size(rows.max(1) + 1)
            .with_coerce_primitive(true)
            .build_decoder()?)
    }

    /// One array per field for every record of `records`; a record that does not
    /// decode gets NULLs and is marked in `bad`; a NULL record (a tombstone, a record
    /// without key) gets NULLs too.
    fn decode(&self, records: &BinaryArray, bad: &mut [bool]) -> Result<Vec<ArrayRef>> {
        let rows = records.len();
        // Fields decoded with serde_json (JSON text, base64 bytes) first: they also tell
        // which records are not JSON objects at all.
        let serde_fields: Vec<(usize, &String, SqlType)> =
            self.fields.iter().enumerate().filter(|(_, (_, t))| !t.by_arrow()).map(|(i, (n, t))| (i, n, *t)).collect();
        let mut serde_arrays: HashMap<usize, ArrayRef> = HashMap::new();
        if !serde_fields.is_empty() {
            let mut text: Vec<StringBuilder> = serde_fields.iter().map(|_| StringBuilder::new()).collect();
            let mut bytes: Vec<BinaryBuilder> = serde_fields.iter().map(|_| BinaryBuilder::new()).collect();
            for (row, record) in records.iter().enumerate() {
                let object = match record {
                    None => None,
                    Some(r) => match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(r) {
                        Ok(o) => Some(o),
                        Err(_) => {
                            bad[row] = true;
                            None
                        }
                    },
                };
                for (j, (_, name, t)) in serde_fields.iter().enumerate() {
                    let v = object.as_ref().and_then(|o| o.get(name.as_str())).filter(|v| !v.is_null());
                    match (t, v) {
                        (SqlType::Json, Some(v)) => text[j].append_value(v.to_string()),
                        (SqlType::Bytea, Some(serde_json::Value::String(s))) => {
                            match base64::engine::general_purpose::STANDARD.decode(s) {
                                Ok(b) => bytes[j].append_value(b),
                                Err(_) => {
                                    bad[row] = true;
                                    bytes[j].append_null();
                                }
                            }
                        }
                        (SqlType::Bytea, Some(_)) => {
                            bad[row] = true;
                            bytes[j].append_null();
                        }
                        (SqlType::Bytea, None) => bytes[j].append_null(),
                        _ => text[j].append_null(),
                    }
                }
            }
            for (j, (i, _, t)) in serde_fields.iter().enumerate() {
                let a: ArrayRef =
                    if *t == SqlType::Bytea { Arc::new(bytes[j].finish()) } else { Arc::new(text[j].finish()) };
                serde_arrays.insert(*i, a);
            }
        }
        let arrow_batch = self.decode_arrow(records, bad)?;
        let mut arrow_columns = arrow_batch.columns().iter();
        Ok(self
            .fields
            .iter()
            .enumerate()
            .map(|(i, (_, t))| {
                if t.by_arrow() {
                    arrow_columns
                        .next()
                        .cloned()
                        .unwrap_or_else(|| datafusion::arrow::array::new_null_array(&t.arrow(), rows))
                } else {
                    serde_arrays
                        .remove(&i)
                        .unwrap_or_else(|| datafusion::arrow::array::new_null_array(&t.arrow(), rows))
                }
            })
            .collect())
    }

    /// The arrow-decoded fields of every record: all records at once when they all
    /// decode, else record by record to find the ones that do not.
    fn decode_arrow(&self, records: &BinaryArray, bad: &mut [bool]) -> Result<RecordBatch> {
        let rows = records.len();
        let input = |row: usize, bad: &[bool]| -> &[u8] {
            if bad[row] || records.is_null(row) {
                b"{}"
            } else {
                records.value(row)
            }
        };
        let mut reader = self.reader(rows)?;
        let mut whole = true;
        for row in 0..rows {
            let before = reader.len();
            if reader.decode(input(row, bad)).is_err() || reader.has_partial_record() || reader.len() != before + 1 {
                whole = false;
                break;
            }
        }
        if whole {
            if let Ok(Some(batch)) = reader.flush() {
                if batch.num_rows() == rows {
                    return Ok(batch);
                }
            }
        }
        // Some record does not decode: try each alone, then decode the good ones (and
        // `{}` for the others) together.
        for row in 0..rows {
            if bad[row] || records.is_null(row) {
                continue;
            }
            let mut probe = self.reader(1)?;
            let ok = probe.decode(records.value(row)).is_ok()
                && !probe.has_partial_record()
                && probe.len() == 1
                && matches!(probe.flush(), Ok(Some(b)) if b.num_rows() == 1);
            if !ok {
                bad[row] = true;
            }
        }
        let mut reader = self.reader(rows)?;
        for row in 0..rows {
            reader.decode(input(row, bad))?;
        }
        match reader.flush()? {
            Some(batch) => Ok(batch),
            None => Ok(RecordBatch::new_empty(self.arrow_schema.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

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
        let values: BinaryArray = vec![
            Some(&br#"{"n": 1, "price": 12.34, "day": "2024-02-29", "doc": {"a": [1, 2]}}"#[..]),
            Some(&b"not json"[..]),
            Some(&br#"{"n": "many"}"#[..]),
            None,
            Some(&br#"{"n": 5, "extra": true}"#[..]),
            Some(&br#"{"n": 6} {"n": 7}"#[..]),
        ]
        .into_iter()
        .collect();
        let offsets = datafusion::arrow::array::Int64Array::from(vec![0, 1, 2, 3, 4, 5]);
        for skip in [false, true] {
            def.on_error = if skip { OnError::Skip } else { OnError::Null };
            let stats = Arc::new(SourceStats::default());
            let d = SourceDecoder::new(&def, &[0, 1, 2, 3, 4], stats.clone()).unwrap();
            assert_eq!(d.raw_columns, vec![1, 4]);
            let raw = RecordBatch::try_new(
                Arc::new(raw_schema().project(&[1, 4]).unwrap()),
                vec![Arc::new(offsets.clone()), Arc::new(values.clone())],
            )
            .unwrap();
            let out = d.decode(&raw).unwrap();
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
