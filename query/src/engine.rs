//! The SQL engine: parses statements, answers the ones of its own (`SHOW TOPICS`), and
//! hands the rest to DataFusion, whose catalog shows every topic as a table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryArray, Int32Array, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

use crate::error::SqlError;
use crate::topic_table::TopicTable;
use crate::topics::Topics;

const CATALOG: &str = "quarry";
const SCHEMA: &str = "public";

/// What a statement gives back.
pub enum Output {
    /// Rows, read as they are produced.
    Rows(SendableRecordBatchStream),
    /// A statement without rows, with its command tag (`CREATE SOURCE`).
    Done(String),
}

/// Plans and runs SQL against the node's topics.
pub struct Engine {
    ctx: SessionContext,
    topics: Arc<dyn Topics>,
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
        catalog
            .register_schema(SCHEMA, Arc::new(TopicSchema { topics: topics.clone() }))
            .map_err(|e| SqlError::from_datafusion(e, ""))?;
        datafusion_functions_json::register_all(&mut ctx).map_err(|e| SqlError::from_datafusion(e, ""))?;
        ctx.register_udf(text_udf());
        Ok(Engine { ctx, topics })
    }

    /// Runs every statement of `sql` in order and returns what each gave back; the rows
    /// of a query are read from the stream as the caller consumes it. Stops at the first
    /// statement that fails.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Output>, SqlError> {
        let statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
            .map_err(|e| SqlError::from_datafusion(e, sql))?;
        if statements.is_empty() {
            return Err(SqlError::new(crate::error::SYNTAX_ERROR, "no statement to run", None));
        }
        let mut out = Vec::with_capacity(statements.len());
        for statement in statements {
            out.push(self.run(statement, sql).await?);
        }
        Ok(out)
    }

    async fn run(&self, statement: DfStatement, sql: &str) -> Result<Output, SqlError> {
        if let DfStatement::Statement(s) = &statement {
            if let Statement::ShowVariable { variable } = s.as_ref() {
                let words: Vec<String> = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect();
                if words == ["topics"] {
                    return self.show_topics().await;
                }
            }
        }
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await.map_err(|e| SqlError::from_datafusion(e, sql))?;
        let df = self.ctx.execute_logical_plan(plan).await.map_err(|e| SqlError::from_datafusion(e, sql))?;
        let stream = df.execute_stream().await.map_err(|e| SqlError::from_datafusion(e, sql))?;
        Ok(Output::Rows(stream))
    }

    /// `SHOW TOPICS`: name and partition count of every topic.
    async fn show_topics(&self) -> Result<Output, SqlError> {
        let mut names = self.topics.topic_names();
        names.sort();
        let partitions: Vec<i32> = names.iter().map(|n| self.topics.partition_count(n).unwrap_or(0)).collect();
        let mut name_col = StringBuilder::new();
        for n in &names {
            name_col.append_value(n);
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("partitions", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(name_col.finish()) as ArrayRef, Arc::new(Int32Array::from(partitions))],
        )
        .map_err(|e| SqlError::from_datafusion(e.into(), ""))?;
        let df = self.ctx.read_batch(batch).map_err(|e| SqlError::from_datafusion(e, ""))?;
        Ok(Output::Rows(df.execute_stream().await.map_err(|e| SqlError::from_datafusion(e, ""))?))
    }
}

/// The schema every topic appears in, as it is now: tables come and go with topics.
#[derive(Debug)]
struct TopicSchema {
    topics: Arc<dyn Topics>,
}

#[async_trait]
impl SchemaProvider for TopicSchema {
    fn table_names(&self) -> Vec<String> {
        self.topics.topic_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self
            .topics
            .partition_count(name)
            .map(|_| Arc::new(TopicTable::new(name.to_string(), self.topics.clone())) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.topics.partition_count(name).is_some()
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
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| DataFusionError::Internal("text() takes bytea".into()))?;
            let text: StringArray = bytes.iter().map(|b| b.map(|b| String::from_utf8_lossy(b).into_owned())).collect();
            Ok(ColumnarValue::Array(Arc::new(text)))
        }),
    )
}
