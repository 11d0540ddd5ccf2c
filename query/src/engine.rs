//! The SQL engine: parses statements, answers the ones of its own (`SHOW TOPICS`,
//! `SHOW SOURCES`, `DESCRIBE`, `CREATE SOURCE`, `DROP SOURCE`, and session statements
//! clients send that have nothing to do here), and hands queries to DataFusion, whose
//! catalog shows every source and every topic as a table.
//!
//! A statement is [`Engine::prepare`]d once (parsed and planned, `$1`-style parameters
//! left open) and [`Engine::run`] with parameter values, as the extended query protocol
//! does; [`Engine::execute`] does both for a string of statements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int32Array, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{create_udf, ColumnarValue, LogicalPlan, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{DescribeAlias, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{self, SqlError};
use crate::source::{self, Origin, SourceDef, SourceStats, SourceTable};
use crate::topic_table::{raw_schema, TopicTable, OFFSET, PARTITION, TIMESTAMP};
use crate::topics::{CatalogError, Topics};
use crate::values::pg_type_name;

const CATALOG: &str = "quarry";
const SCHEMA: &str = "public";

/// What a statement gives back.
pub enum Output {
    /// Rows, read as they are produced.
    Rows(SendableRecordBatchStream),
    /// A statement without rows, with its command tag (`CREATE SOURCE`).
    Done(String),
}

/// A statement parsed and planned, ready to run (again and again, with parameters).
#[derive(Clone, Debug)]
pub struct Prepared {
    kind: Kind,
    schema: SchemaRef,
    /// The types of `$1`, `$2`, ... (none for our own statements).
    params: Vec<Option<DataType>>,
}

#[derive(Clone, Debug)]
enum Kind {
    Query(Box<LogicalPlan>),
    ShowTopics,
    ShowSources,
    Describe(String),
    CreateSource {
        def: SourceDef,
        if_not_exists: bool,
        at: Option<usize>,
    },
    DropSource {
        name: String,
        if_exists: bool,
        at: Option<usize>,
    },
    /// Accepted and without effect: `SET`, and transaction statements (every statement
    /// is its own transaction). `Some(true)` opens a transaction block, `Some(false)`
    /// ends one.
    Session {
        tag: String,
        transaction: Option<bool>,
    },
}

impl Prepared {
    /// The columns of its rows; none for a command.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whether it gives back rows.
    pub fn returns_rows(&self) -> bool {
        !matches!(self.kind, Kind::CreateSource { .. } | Kind::DropSource { .. } | Kind::Session { .. })
    }

    /// For a transaction statement, whether it opens (`true`) or ends a block.
    pub fn transaction(&self) -> Option<bool> {
        match &self.kind {
            Kind::Session { transaction, .. } => *transaction,
            _ => None,
        }
    }

    /// The types of `$1`, `$2`, ... as far as the statement tells them.
    pub fn parameter_types(&self) -> &[Option<DataType>] {
        &self.params
    }
}

/// Plans and runs SQL against the node's topics and sources.
pub struct Engine {
    ctx: SessionContext,
    topics: Arc<dyn Topics>,
    stats: Arc<Mutex<HashMap<String, Arc<SourceStats>>>>,
}

impl Engine {
    pub fn new(topics: Arc<dyn Topics>) -> Result<Engine, SqlError> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            // Where in the statement each name is, for error positions.
            .set_bool("datafusion.sql_parser.collect_spans", true);
        let mut ctx = SessionContext::new_with_config(config);
        let catalog = ctx.catalog(CATALOG).ok_or_else(|| SqlError::internal("default catalog missing"))?;
        let stats = Arc::new(Mutex::new(HashMap::new()));
        catalog
            .register_schema(SCHEMA, Arc::new(TopicSchema { topics: topics.clone(), stats: stats.clone() }))
            .map_err(|e| SqlError::from_datafusion(e, ""))?;
        datafusion_functions_json::register_all(&mut ctx).map_err(|e| SqlError::from_datafusion(e, ""))?;
        ctx.register_udf(text_udf());
        Ok(Engine { ctx, topics, stats })
    }

    /// Runs every statement of `sql` in order and returns what each gave back; the rows
    /// of a query are read from the stream as the caller consumes it. Each statement is
    /// planned when its turn comes (a query may read a source created just before it).
    /// Stops at the first statement that fails.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Output>, SqlError> {
        let statements = self.parse(sql)?;
        if statements.is_empty() {
            return Err(SqlError::new(error::SYNTAX_ERROR, "no statement to run", None));
        }
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            let prepared = self.plan(statement, sql).await?;
            out.push(self.run(&prepared, Vec::new(), sql).await?);
        }
        Ok(out)
    }

    /// Parses and plans one statement; `None` for an empty one.
    pub async fn prepare(&self, sql: &str) -> Result<Option<Prepared>, SqlError> {
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(SqlError::new(
                error::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
                None,
            ));
        }
        match statements.pop() {
            Some(s) => Ok(Some(self.plan(s, sql).await?)),
            None => Ok(None),
        }
    }

    /// Runs a prepared statement with values for its parameters (`$1` first). `sql` is
    /// its text, for error positions.
    pub async fn run(&self, prepared: &Prepared, params: Vec<ScalarValue>, sql: &str) -> Result<Output, SqlError> {
        let df_err = |e: DataFusionError| SqlError::from_datafusion(e, sql);
        match &prepared.kind {
            Kind::Query(plan) => {
                let expected = prepared.params.len();
                if params.len() != expected {
                    return Err(SqlError::new(
                        error::PROTOCOL_VIOLATION,
                        format!("the statement takes {expected} parameters, {} were given", params.len()),
                        None,
                    ));
                }
                let plan = if params.is_empty() {
                    plan.as_ref().clone()
                } else {
                    plan.as_ref().clone().replace_params_with_values(&ParamValues::from(params)).map_err(df_err)?
                };
                let df = self.ctx.execute_logical_plan(plan).await.map_err(df_err)?;
                Ok(Output::Rows(df.execute_stream().await.map_err(df_err)?))
            }
            Kind::ShowTopics => self.rows(prepared, self.show_topics()).await,
            Kind::ShowSources => self.rows(prepared, self.show_sources()).await,
            Kind::Describe(name) => {
                let columns = self.describe(name, sql).await?;
                self.rows(prepared, columns).await
            }
            Kind::CreateSource { def, if_not_exists, at } => {
                self.create_source(def, *if_not_exists, *at).await?;
                Ok(Output::Done("CREATE SOURCE".into()))
            }
            Kind::DropSource { name, if_exists, at } => {
                match self.topics.drop_source(name).await {
                    Ok(()) => {}
                    Err(CatalogError::Unknown) if *if_exists => {}
                    Err(CatalogError::Unknown) => {
                        return Err(SqlError::new(
                            error::UNDEFINED_OBJECT,
                            format!("source \"{name}\" does not exist"),
                            *at,
                        ))
                    }
                    Err(e) => return Err(catalog_error(e)),
                }
                self.stats.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
                Ok(Output::Done("DROP SOURCE".into()))
            }
            Kind::Session { tag, .. } => Ok(Output::Done(tag.clone())),
        }
    }

    /// The statements of `sql`: ours (`CREATE SOURCE`, `DROP SOURCE`) and DataFusion's.
    pub fn parse(&self, sql: &str) -> Result<Vec<Parsed>, SqlError> {
        let dialect = PostgreSqlDialect {};
        let mut parser =
            DFParserBuilder::new(sql).with_dialect(&dialect).build().map_err(|e| SqlError::from_datafusion(e, sql))?;
        let mut out = Vec::new();
        loop {
            while parser.parser.consume_token(&Token::SemiColon) {}
            if parser.parser.peek_token_ref().token == Token::EOF {
                break;
            }
            let p = &mut parser.parser;
            let statement = if source::at_create_source(p) {
                let (def, if_not_exists) = source::parse_create(p, sql)?;
                let at = error::find_name(sql, &def.name);
                Parsed(Parse::Ours(Kind::CreateSource { def, if_not_exists, at }))
            } else if source::at_drop_source(p) {
                let (name, if_exists, at) = source::parse_drop(p, sql)?;
                Parsed(Parse::Ours(Kind::DropSource { name, if_exists, at }))
            } else {
                Parsed(Parse::DataFusion(Box::new(
                    parser.parse_statement().map_err(|e| SqlError::from_datafusion(e, sql))?,
                )))
            };
            out.push(statement);
            let next = parser.parser.peek_token();
            if next.token != Token::EOF && next.token != Token::SemiColon {
                return Err(SqlError::from_datafusion(
                    DataFusionError::SQL(
                        Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError(format!(
                            "Expected: end of statement, found: {} at Line: {}, Column: {}",
                            next.token, next.span.start.line, next.span.start.column
                        ))),
                        None,
                    ),
                    sql,
                ));
            }
        }
        Ok(out)
    }

    /// Plans a parsed statement (`sql` is the text it came from, for error positions).
    pub async fn plan(&self, statement: Parsed, sql: &str) -> Result<Prepared, SqlError> {
        let statement = match statement {
            Parsed(Parse::Ours(kind)) => {
                return Ok(Prepared { kind, schema: Arc::new(Schema::empty()), params: Vec::new() })
            }
            Parsed(Parse::DataFusion(s)) => *s,
        };
        if let DfStatement::Statement(s) = &statement {
            if let Some(kind) = ours(s) {
                let schema = match &kind {
                    Kind::ShowTopics => show_topics_schema(),
                    Kind::ShowSources => show_sources_schema(),
                    Kind::Describe(_) => describe_schema(),
                    _ => Arc::new(Schema::empty()),
                };
                return Ok(Prepared { kind, schema, params: Vec::new() });
            }
        }
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await.map_err(|e| SqlError::from_datafusion(e, sql))?;
        let refused = match &plan {
            LogicalPlan::Ddl(ddl) => Some(format!(
                "{} is not supported: CREATE SOURCE gives a topic typed columns",
                ddl.name().trim_start_matches("Create").to_uppercase()
            )),
            LogicalPlan::Dml(dml) => Some(format!(
                "{} is not supported: topics are written by Kafka producers",
                dml.op.name().to_uppercase()
            )),
            LogicalPlan::Copy(_) => Some("COPY is not supported".into()),
            LogicalPlan::Statement(s) => Some(format!("{} is not supported", s.name())),
            _ => None,
        };
        if let Some(message) = refused {
            return Err(SqlError::new(error::FEATURE_NOT_SUPPORTED, message, Some(1)));
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let params = parameter_types(&plan)?;
        Ok(Prepared { kind: Kind::Query(Box::new(plan)), schema, params })
    }

    async fn rows(&self, prepared: &Prepared, columns: Vec<ArrayRef>) -> Result<Output, SqlError> {
        let batch = RecordBatch::try_new(prepared.schema.clone(), columns)
            .map_err(|e| SqlError::from_datafusion(e.into(), ""))?;
        let df = self.ctx.read_batch(batch).map_err(|e| SqlError::from_datafusion(e, ""))?;
        Ok(Output::Rows(df.execute_stream().await.map_err(|e| SqlError::from_datafusion(e, ""))?))
    }

    /// `SHOW TOPICS`: name and partition count of every topic.
    fn show_topics(&self) -> Vec<ArrayRef> {
        let mut names = self.topics.topic_names();
        names.sort();
        let partitions: Vec<i32> = names.iter().map(|n| self.topics.partition_count(n).unwrap_or(0)).collect();
        vec![Arc::new(StringArray::from(names)), Arc::new(Int32Array::from(partitions))]
    }

    /// `SHOW SOURCES`: each source, its topic, columns, options, and how many of its
    /// records did not decode since this node started.
    fn show_sources(&self) -> Vec<ArrayRef> {
        let defs: Vec<SourceDef> = self.topics.sources().values().filter_map(|d| SourceDef::from_json(d)).collect();
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let column_list = |d: &SourceDef| {
            d.columns
                .iter()
                .map(|c| {
                    let key = if c.origin == Origin::Key { " KEY" } else { "" };
                    format!("{} {}{key}", c.name, c.sql_type.sql_name())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![
            Arc::new(StringArray::from_iter_values(defs.iter().map(|d| d.name.clone()))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|d| d.topic.clone()))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(column_list))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|d| d.options()))),
            Arc::new(UInt64Array::from_iter_values(
                defs.iter().map(|d| {
                    stats.get(&d.name).map_or(0, |s| s.undecodable.load(std::sync::atomic::Ordering::Relaxed))
                }),
            )),
        ]
    }

    /// `DESCRIBE name`: the columns of a source or topic.
    async fn describe(&self, name: &str, sql: &str) -> Result<Vec<ArrayRef>, SqlError> {
        let (names, types, nullable, origins): (Vec<String>, Vec<String>, Vec<bool>, Vec<&str>) = if let Some(def) =
            self.source(name)
        {
            let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for c in &def.columns {
                cols.0.push(c.name.clone());
                cols.1.push(c.sql_type.sql_name());
                cols.2.push(!matches!(c.origin, Origin::Record(PARTITION | OFFSET | TIMESTAMP)));
                cols.3.push(match c.origin {
                    Origin::Key => "key",
                    Origin::Value => "value",
                    Origin::Record(_) => "record",
                });
            }
            cols
        } else if self.topics.partition_count(name).is_some() {
            let schema = raw_schema();
            let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for f in schema.fields() {
                cols.0.push(f.name().clone());
                cols.1.push(if f.name() == "_headers" { "headers".into() } else { pg_type_name(f.data_type()).into() });
                cols.2.push(f.is_nullable());
                cols.3.push("record");
            }
            cols
        } else {
            return Err(SqlError::new(
                error::UNDEFINED_TABLE,
                format!("no source or topic named \"{name}\""),
                error::find_name(sql, name),
            ));
        };
        Ok(vec![
            Arc::new(StringArray::from(names)),
            Arc::new(StringArray::from(types)),
            Arc::new(BooleanArray::from(nullable)),
            Arc::new(StringArray::from(origins)),
        ])
    }

    fn source(&self, name: &str) -> Option<SourceDef> {
        self.topics.sources().get(name).and_then(|d| SourceDef::from_json(d))
    }

    async fn create_source(&self, def: &SourceDef, if_not_exists: bool, at: Option<usize>) -> Result<(), SqlError> {
        if self.topics.partition_count(&def.topic).is_none() {
            return Err(SqlError::new(error::UNDEFINED_TABLE, format!("topic \"{}\" does not exist", def.topic), None));
        }
        let taken = |what: &str| {
            SqlError::new(error::DUPLICATE_TABLE, format!("a {what} named \"{}\" already exists", def.name), at)
        };
        // A source may take its own topic's name (it hides the raw table then), not another's.
        if self.topics.partition_count(&def.name).is_some() && def.name != def.topic {
            return Err(taken("topic"));
        }
        match self.topics.create_source(&def.name, def.to_json()).await {
            Ok(()) => Ok(()),
            Err(CatalogError::Exists) if if_not_exists => Ok(()),
            Err(CatalogError::Exists) => Err(taken("source")),
            Err(e) => Err(catalog_error(e)),
        }
    }
}

/// The types of a plan's `$1`, `$2`, ... in order, as far as the plan tells them.
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, SqlError> {
    let types = plan.get_parameter_types().map_err(|e| SqlError::from_datafusion(e, ""))?;
    let mut numbered: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (id, t) in types {
        let n = id.trim_start_matches('$').parse::<usize>().map_err(|_| {
            SqlError::new(error::SYNTAX_ERROR, format!("parameter {id} is not of the form $1, $2, ..."), None)
        })?;
        numbered.push((n, t));
    }
    let count = numbered.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut out = vec![None; count];
    for (n, t) in numbered {
        if n >= 1 {
            out[n - 1] = t;
        }
    }
    Ok(out)
}

fn catalog_error(e: CatalogError) -> SqlError {
    match e {
        CatalogError::Unavailable(why) => {
            SqlError::new(error::CANNOT_CONNECT_NOW, format!("the catalog cannot be changed now: {why}"), None)
        }
        CatalogError::Exists => SqlError::new(error::DUPLICATE_TABLE, "already exists", None),
        CatalogError::Unknown => SqlError::new(error::UNDEFINED_OBJECT, "does not exist", None),
    }
}

/// One statement, parsed, not yet planned.
pub struct Parsed(Parse);

enum Parse {
    Ours(Kind),
    DataFusion(Box<DfStatement>),
}

/// Statements answered here rather than planned by DataFusion.
fn ours(s: &Statement) -> Option<Kind> {
    match s {
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect();
            match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["topics"] => Some(Kind::ShowTopics),
                ["sources"] => Some(Kind::ShowSources),
                _ => None,
            }
        }
        Statement::ExplainTable {
            describe_alias: DescribeAlias::Describe | DescribeAlias::Desc, table_name, ..
        } => {
            let name = table_name.0.last().and_then(|p| p.as_ident()).map(source::ident_name)?;
            Some(Kind::Describe(name))
        }
        Statement::Set(_) => Some(Kind::Session { tag: "SET".into(), transaction: None }),
        Statement::StartTransaction { .. } => Some(Kind::Session { tag: "BEGIN".into(), transaction: Some(true) }),
        Statement::Commit { .. } => Some(Kind::Session { tag: "COMMIT".into(), transaction: Some(false) }),
        Statement::Rollback { .. } => Some(Kind::Session { tag: "ROLLBACK".into(), transaction: Some(false) }),
        Statement::Discard { .. } => Some(Kind::Session { tag: "DISCARD ALL".into(), transaction: None }),
        _ => None,
    }
}

fn show_topics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("partitions", DataType::Int32, false),
    ]))
}

fn show_sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("columns", DataType::Utf8, false),
        Field::new("options", DataType::Utf8, false),
        Field::new("undecodable", DataType::UInt64, false),
    ]))
}

fn describe_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("column_name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("origin", DataType::Utf8, false),
    ]))
}

/// The schema every source and topic appears in, as they are now: tables come and go
/// with them. A source named like a topic hides the topic.
#[derive(Debug)]
struct TopicSchema {
    topics: Arc<dyn Topics>,
    stats: Arc<Mutex<HashMap<String, Arc<SourceStats>>>>,
}

#[async_trait]
impl SchemaProvider for TopicSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topics.sources().into_keys().collect();
        for t in self.topics.topic_names() {
            if !names.contains(&t) {
                names.push(t);
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if let Some(def) = self.topics.sources().get(name).and_then(|d| SourceDef::from_json(d)) {
            let stats =
                self.stats.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_default().clone();
            return Ok(Some(Arc::new(SourceTable::new(Arc::new(def), self.topics.clone(), stats))));
        }
        Ok(self
            .topics
            .partition_count(name)
            .map(|_| Arc::new(TopicTable::new(name.to_string(), self.topics.clone())) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.topics.sources().contains_key(name) || self.topics.partition_count(name).is_some()
    }
}

/// `text(bytea)`: bytes read as UTF-8 text (invalid sequences replaced), for keys and
/// values; the JSON functions take its result.
fn text_udf() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "text",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let bytes = arrays[0]
                .as_any()
                .downcast_ref::<datafusion::arrow::array::BinaryArray>()
                .ok_or_else(|| DataFusionError::Internal("text() takes bytea".into()))?;
            let text: StringArray = bytes.iter().map(|b| b.map(|b| String::from_utf8_lossy(b).into_owned())).collect();
            Ok(ColumnarValue::Array(Arc::new(text)))
        }),
    )
}
