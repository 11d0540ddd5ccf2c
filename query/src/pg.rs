//! The PostgreSQL wire protocol (through `pgwire`): psql, psycopg, JDBC, tokio-postgres.
//!
//! Simple queries run every statement of the string in turn; the extended protocol
//! prepares one statement (Parse), takes parameter values (Bind, text or binary) and
//! runs it (Execute), with results in the format each column asks for. Rows stream
//! from DataFusion's batches as the client reads them. Errors carry their SQLSTATE and
//! the character position of the problem.

use std::error::Error;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal32Type, Decimal64Type, Field, Float16Type, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::StartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Output, Prepared};
use crate::error::{self, SqlError};
use crate::source::JSON_EXTENSION;
use crate::values::pg_text;

/// Serves PostgreSQL clients on `listener` until `shutdown`; open connections end then too.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, shutdown: CancellationToken) {
    let parser = Arc::new(Parser { engine: engine.clone() });
    let handlers = Arc::new(Handlers { backend: Arc::new(Backend { engine, parser }) });
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a SQL connection failed");
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let handlers = handlers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = pgwire::tokio::process_socket(socket, None, handlers) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "SQL connection ended");
                    }
                }
            }
        });
    }
}

struct Handlers {
    backend: Arc<Backend>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.backend.clone()
    }
}

struct Backend {
    engine: Arc<Engine>,
    parser: Arc<Parser>,
}

impl NoopStartupHandler for Backend {}

/// A statement of the extended protocol: its text (for error positions) and its plan.
#[derive(Clone, Debug)]
pub struct Statement {
    sql: Arc<str>,
    prepared: Prepared,
}

fn user_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn error_info(e: &SqlError) -> ErrorInfo {
    metrics::counter!("quarry_sql_errors_total", "code" => e.code).increment(1);
    let mut info = ErrorInfo::new("ERROR".into(), e.code.into(), e.message.clone());
    info.position = e.position.map(|p| p.to_string());
    info
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        metrics::counter!("quarry_sql_statements_total", "endpoint" => "pg").increment(1);
        let statements = match self.engine.parse(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            let result = match self.engine.plan(statement, query).await {
                Ok(prepared) => self.engine.run(&prepared, Vec::new(), query).await.map(|o| (prepared, o)),
                Err(e) => Err(e),
            };
            match result {
                Ok((prepared, output)) => out.push(response(&prepared, output, &Format::UnifiedText)),
                Err(e) => {
                    out.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// What a statement's output is on the wire, its rows in `format`.
fn response(prepared: &Prepared, output: Output, format: &Format) -> Response {
    match output {
        Output::Rows(stream) => {
            let fields = Arc::new(fields(
                &prepared.schema().fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>(),
                format,
            ));
            Response::Query(QueryResponse::new(fields.clone(), rows(stream, fields)))
        }
        Output::Done(tag) => match prepared.transaction() {
            Some(true) => Response::TransactionStart(Tag::new(&tag)),
            Some(false) => Response::TransactionEnd(Tag::new(&tag)),
            None => Response::Execution(Tag::new(&tag)),
        },
    }
}

/// The rows of a stream of batches, encoded as each batch arrives; an error ends them.
fn rows(
    stream: datafusion::execution::SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    let mut encoder = DataRowEncoder::new(fields.clone());
    stream
        .map(move |batch| -> Vec<PgWireResult<DataRow>> {
            match batch {
                Ok(batch) => encode(&batch, &fields, &mut encoder),
                Err(e) => vec![Err(user_error(SqlError::from_datafusion(e, "")))],
            }
        })
        .flat_map(futures::stream::iter)
}

fn encode(batch: &RecordBatch, fields: &[FieldInfo], encoder: &mut DataRowEncoder) -> Vec<PgWireResult<DataRow>> {
    let mut out = Vec::with_capacity(batch.num_rows());
    let columns = batch.columns();
    let mut buf = Vec::new();
    for row in 0..batch.num_rows() {
        for (column, field) in columns.iter().zip(fields) {
            let cell = if column.is_null(row) {
                Cell(None)
            } else {
                buf.clear();
                if field.format() == FieldFormat::Binary {
                    binary(column, row, &mut buf);
                } else {
                    buf.extend_from_slice(pg_text(column, row).unwrap_or_default().as_bytes());
                }
                Cell(Some(&buf))
            };
            if let Err(e) = encoder.encode_field(&cell) {
                out.push(Err(e));
                return out;
            }
        }
        out.push(Ok(encoder.take_row()));
    }
    out
}

/// A value already in its wire form (text or binary, as its column asks).
#[derive(Debug)]
struct Cell<'a>(Option<&'a [u8]>);

impl ToSql for Cell<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            Some(b) => {
                out.put_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Cell<'_> {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        _options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

/// Column descriptions, each column in the format `format` gives it.
fn fields(schema: &[Field], format: &Format) -> Vec<FieldInfo> {
    schema
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (t, size) = pg_type(f);
            let mut info = FieldInfo::new(f.name().clone(), None, None, t, format.format_for(i)).with_type_size(size);
            if let DataType::Decimal128(p, s) = f.data_type() {
                info = info.with_type_modifier(((i32::from(*p)) << 16 | i32::from(*s as u8)) + 4);
            }
            info
        })
        .collect()
}

/// The PostgreSQL type a column is sent as, and its size (-1: variable).
fn pg_type(f: &Field) -> (Type, i16) {
    if f.metadata().get("ARROW:extension:name").map(String::as_str) == Some(JSON_EXTENSION) {
        return (Type::JSON, -1);
    }
    match f.data_type() {
        DataType::Boolean => (Type::BOOL, 1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (Type::INT2, 2),
        DataType::Int32 | DataType::UInt16 => (Type::INT4, 4),
        DataType::Int64 | DataType::UInt32 => (Type::INT8, 8),
        DataType::UInt64 | DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            (Type::NUMERIC, -1)
        }
        DataType::Float16 | DataType::Float32 => (Type::FLOAT4, 4),
        DataType::Float64 => (Type::FLOAT8, 8),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (Type::TEXT, -1),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            (Type::BYTEA, -1)
        }
        DataType::Date32 | DataType::Date64 => (Type::DATE, 4),
        DataType::Timestamp(_, None) => (Type::TIMESTAMP, 8),
        DataType::Timestamp(_, Some(_)) => (Type::TIMESTAMPTZ, 8),
        DataType::Time32(_) | DataType::Time64(_) => (Type::TIME, 8),
        // Everything else (intervals, lists, structs, JSON unions) as its text.
        _ => (Type::TEXT, -1),
    }
}

/// The PostgreSQL type of a value of `t` (a parameter's).
fn pg_type_of(t: &DataType) -> Type {
    pg_type(&Field::new("", t.clone(), true)).0
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between the Unix epoch and PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// `array[row]` in PostgreSQL's binary form for the type [`pg_type`] gives it.
fn binary(array: &ArrayRef, row: usize, out: &mut Vec<u8>) {
    match array.data_type() {
        DataType::Boolean => out.push(u8::from(array.as_boolean().value(row))),
        DataType::Int8 => out.extend(i16::from(array.as_primitive::<Int8Type>().value(row)).to_be_bytes()),
        DataType::Int16 => out.extend(array.as_primitive::<Int16Type>().value(row).to_be_bytes()),
        DataType::UInt8 => out.extend(i16::from(array.as_primitive::<UInt8Type>().value(row)).to_be_bytes()),
        DataType::Int32 => out.extend(array.as_primitive::<Int32Type>().value(row).to_be_bytes()),
        DataType::UInt16 => out.extend(i32::from(array.as_primitive::<UInt16Type>().value(row)).to_be_bytes()),
        DataType::Int64 => out.extend(array.as_primitive::<Int64Type>().value(row).to_be_bytes()),
        DataType::UInt32 => out.extend(i64::from(array.as_primitive::<UInt32Type>().value(row)).to_be_bytes()),
        DataType::UInt64 => numeric(i128::from(array.as_primitive::<UInt64Type>().value(row)), 0, out),
        DataType::Decimal32(_, s) => numeric(i128::from(array.as_primitive::<Decimal32Type>().value(row)), *s, out),
        DataType::Decimal64(_, s) => numeric(i128::from(array.as_primitive::<Decimal64Type>().value(row)), *s, out),
        DataType::Decimal128(_, s) => numeric(array.as_primitive::<Decimal128Type>().value(row), *s, out),
        DataType::Float16 => out.extend(array.as_primitive::<Float16Type>().value(row).to_f32().to_be_bytes()),
        DataType::Float32 => out.extend(array.as_primitive::<Float32Type>().value(row).to_be_bytes()),
        DataType::Float64 => out.extend(array.as_primitive::<Float64Type>().value(row).to_be_bytes()),
        DataType::Utf8 => out.extend_from_slice(array.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => out.extend_from_slice(array.as_string::<i64>().value(row).as_bytes()),
        DataType::Utf8View => out.extend_from_slice(array.as_string_view().value(row).as_bytes()),
        DataType::Binary => out.extend_from_slice(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => out.extend_from_slice(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => out.extend_from_slice(array.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => out.extend_from_slice(array.as_fixed_size_binary().value(row)),
        DataType::Date32 => out.extend((array.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS).to_be_bytes()),
        DataType::Date64 => {
            let days = array.as_primitive::<Date64Type>().value(row).div_euclid(86_400_000) as i32;
            out.extend((days - PG_EPOCH_DAYS).to_be_bytes())
        }
        DataType::Timestamp(unit, _) => {
            let micros = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row).saturating_mul(1_000_000),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row).saturating_mul(1000)
                }
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1000),
            };
            out.extend(micros.saturating_sub(PG_EPOCH_MICROS).to_be_bytes())
        }
        DataType::Time32(TimeUnit::Second) => {
            out.extend((i64::from(array.as_primitive::<Time32SecondType>().value(row)) * 1_000_000).to_be_bytes())
        }
        DataType::Time32(_) => {
            out.extend((i64::from(array.as_primitive::<Time32MillisecondType>().value(row)) * 1000).to_be_bytes())
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            out.extend(array.as_primitive::<Time64MicrosecondType>().value(row).to_be_bytes())
        }
        DataType::Time64(_) => {
            out.extend((array.as_primitive::<Time64NanosecondType>().value(row) / 1000).to_be_bytes())
        }
        _ => out.extend_from_slice(pg_text(array, row).unwrap_or_default().as_bytes()),
    }
}

/// PostgreSQL's binary NUMERIC: digit count, weight, sign, display scale, then base-10000
/// digits.
fn numeric(value: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.max(0) as usize;
    let digits = value.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let int = format!("{int:0>width$}", width = int.len().div_ceil(4) * 4);
    let frac = format!("{frac:0<width$}", width = frac.len().div_ceil(4) * 4);
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).map_or(0, |c| c.parse().unwrap_or(0))).collect()
    };
    let int_groups = group(&int);
    let mut groups = int_groups.clone();
    groups.extend(group(&frac));
    let mut weight = int_groups.len() as i16 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend((groups.len() as i16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend((if value < 0 { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend((scale as u16).to_be_bytes());
    for g in groups {
        out.extend(g.to_be_bytes());
    }
}

/// Parses and plans statements for the extended protocol.
struct Parser {
    engine: Arc<Engine>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        metrics::counter!("quarry_sql_statements_total", "endpoint" => "pg").increment(1);
        let prepared = self.engine.prepare(sql).await.map_err(user_error)?;
        Ok(prepared.map(|prepared| Statement { sql: sql.into(), prepared }))
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.prepared.parameter_types().iter().map(|t| t.as_ref().map_or(Type::UNKNOWN, pg_type_of)).collect())
    }

    fn get_result_schema(&self, stmt: &Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let schema = stmt.prepared.schema();
        let columns: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        Ok(fields(&columns, format.unwrap_or(&Format::UnifiedText)))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, _client: &mut C, portal: &Portal<Statement>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statement = &portal.statement.statement;
        let types = statement.prepared.parameter_types();
        let mut params = Vec::with_capacity(portal.parameters.len());
        for (i, value) in portal.parameters.iter().enumerate() {
            let target = types.get(i).cloned().flatten();
            let wire = portal.statement.parameter_types.get(i).cloned().flatten();
            let value =
                parameter(value.as_deref(), portal.parameter_format.is_binary(i), wire.as_ref(), target.as_ref())
                    .map_err(|mut e| {
                        e.message = format!("parameter ${}: {}", i + 1, e.message);
                        user_error(e)
                    })?;
            params.push(value);
        }
        let output = self.engine.run(&statement.prepared, params, &statement.sql).await.map_err(user_error)?;
        Ok(response(&statement.prepared, output, &portal.result_column_format))
    }
}

/// Type OIDs of the parameter types decoded here.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
}

/// A parameter's value: its bytes (`None` is NULL) in text or binary form of the type the
/// client said (`wire`), converted to the type the statement wants there (`target`).
fn parameter(
    bytes: Option<&[u8]>,
    binary: bool,
    wire: Option<&Type>,
    target: Option<&DataType>,
) -> Result<ScalarValue, SqlError> {
    let Some(bytes) = bytes else {
        return Ok(target.and_then(|t| ScalarValue::try_from(t).ok()).unwrap_or(ScalarValue::Null));
    };
    let wire = wire.filter(|t| **t != Type::UNKNOWN).cloned().or_else(|| target.map(pg_type_of)).unwrap_or(Type::TEXT);
    let bad = |what: &str| {
        SqlError::new(
            error::INVALID_BINARY,
            format!("invalid binary representation of {what} ({} bytes)", bytes.len()),
            None,
        )
    };
    let value = if binary {
        let be = |n: usize, what: &str| -> Result<[u8; 8], SqlError> {
            if bytes.len() != n {
                return Err(bad(what));
            }
            let mut b = [0u8; 8];
            b[8 - n..].copy_from_slice(bytes);
            Ok(b)
        };
        match wire.oid() {
            oid::BOOL => ScalarValue::Boolean(Some(be(1, "boolean")?[7] != 0)),
            oid::INT2 => ScalarValue::Int16(Some(i64::from_be_bytes(be(2, "smallint")?) as i16)),
            oid::INT4 => ScalarValue::Int32(Some(i64::from_be_bytes(be(4, "integer")?) as i32)),
            oid::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(be(8, "bigint")?))),
            oid::FLOAT4 => ScalarValue::Float32(Some(f32::from_bits(u64::from_be_bytes(be(4, "real")?) as u32))),
            oid::FLOAT8 => ScalarValue::Float64(Some(f64::from_bits(u64::from_be_bytes(be(8, "double precision")?)))),
            oid::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
            oid::DATE => ScalarValue::Date32(Some(i64::from_be_bytes(be(4, "date")?) as i32 + PG_EPOCH_DAYS)),
            oid::TIMESTAMP => ScalarValue::TimestampMicrosecond(
                Some(i64::from_be_bytes(be(8, "timestamp")?).saturating_add(PG_EPOCH_MICROS)),
                None,
            ),
            oid::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
                Some(i64::from_be_bytes(be(8, "timestamptz")?).saturating_add(PG_EPOCH_MICROS)),
                Some("+00:00".into()),
            ),
            oid::NUMERIC => ScalarValue::Utf8(Some(numeric_text(bytes).ok_or_else(|| bad("numeric"))?)),
            _ => ScalarValue::Utf8(Some(String::from_utf8(bytes.to_vec()).map_err(|_| bad("text"))?)),
        }
    } else {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| SqlError::new(error::INVALID_TEXT, "parameter text is not UTF-8", None))?;
        let number = |v: Option<ScalarValue>| {
            v.ok_or_else(|| {
                SqlError::new(
                    error::INVALID_TEXT,
                    format!("invalid input syntax for type {}: \"{text}\"", wire.name()),
                    None,
                )
            })
        };
        match (target, wire.oid()) {
            (Some(_), _) => ScalarValue::Utf8(Some(text.to_string())),
            (None, oid::INT2 | oid::INT4 | oid::INT8) => {
                number(text.trim().parse().ok().map(|v| ScalarValue::Int64(Some(v))))?
            }
            (None, oid::FLOAT4 | oid::FLOAT8) => {
                number(text.trim().parse().ok().map(|v| ScalarValue::Float64(Some(v))))?
            }
            (None, oid::BOOL) => number(match text.trim() {
                "t" | "true" | "on" | "1" | "yes" => Some(ScalarValue::Boolean(Some(true))),
                "f" | "false" | "off" | "0" | "no" => Some(ScalarValue::Boolean(Some(false))),
                _ => None,
            })?,
            _ => ScalarValue::Utf8(Some(text.to_string())),
        }
    };
    match target {
        Some(t) if &value.data_type() != t => value.cast_to(t).map_err(|_| {
            SqlError::new(
                error::INVALID_TEXT,
                format!("invalid input syntax for type {}: \"{value}\"", crate::values::pg_type_name(t)),
                None,
            )
        }),
        _ => Ok(value),
    }
}

/// The text of a binary NUMERIC.
fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> { Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)) };
    let count = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let scale = word(6)? as usize;
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let groups: Vec<u16> = (0..count).map(|i| word(8 + 2 * i)).collect::<Option<_>>()?;
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let g = groups.get(w as usize).copied().unwrap_or(0);
        if int.is_empty() {
            int = g.to_string();
        } else {
            int.push_str(&format!("{g:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut w = weight + 1;
    while frac.len() < scale {
        let g = if w < 0 { 0 } else { groups.get(w as usize).copied().unwrap_or(0) };
        frac.push_str(&format!("{g:04}"));
        w += 1;
    }
    frac.truncate(scale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if scale > 0 { format!("{sign}{int}.{frac}") } else { format!("{sign}{int}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_go_to_binary_and_back() {
        for (value, scale, text) in [
            (1234567i128, 2i8, "12345.67"),
            (-5, 3, "-0.005"),
            (0, 2, "0.00"),
            (100000000, 0, "100000000"),
            (12_0000, 4, "12.0000"),
            (i128::from(u64::MAX), 0, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            numeric(value, scale, &mut out);
            assert_eq!(numeric_text(&out).as_deref(), Some(text), "{value} scale {scale}");
        }
        // PostgreSQL's own encoding of 12345.67: 3 digits, weight 1, scale 2.
        let mut out = Vec::new();
        numeric(1234567, 2, &mut out);
        assert_eq!(out, [0, 3, 0, 1, 0, 0, 0, 2, 0, 1, 0x09, 0x29, 0x1a, 0x2c]);
    }

    #[test]
    fn parameters_convert_to_what_the_statement_wants() {
        let int8 = 42i64.to_be_bytes();
        assert_eq!(
            parameter(Some(&int8), true, Some(&Type::INT8), Some(&DataType::Int32)).unwrap(),
            ScalarValue::Int32(Some(42))
        );
        assert_eq!(parameter(Some(b"7"), false, None, Some(&DataType::Int64)).unwrap(), ScalarValue::Int64(Some(7)));
        assert_eq!(parameter(Some(b"7"), false, Some(&Type::INT4), None).unwrap(), ScalarValue::Int64(Some(7)));
        assert_eq!(parameter(None, false, None, Some(&DataType::Utf8)).unwrap(), ScalarValue::Utf8(None));
        let e = parameter(Some(b"seven"), false, None, Some(&DataType::Int64)).unwrap_err();
        assert_eq!(e.code, error::INVALID_TEXT);
        let e = parameter(Some(&[1, 2, 3]), true, Some(&Type::INT8), None).unwrap_err();
        assert_eq!(e.code, error::INVALID_BINARY);
    }
}
