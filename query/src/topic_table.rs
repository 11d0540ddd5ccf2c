//! Every topic is a table: `_partition`, `_offset`, `_timestamp`, `_key`, `_value`,
//! `_headers`, read straight from the stored record batches.
//!
//! Filters on `_partition`, `_offset` and `_timestamp` are pushed into the scan
//! (inexactly: DataFusion still applies them to the rows) and narrow what is read: a
//! partition filter leaves other partitions out, an offset range bounds each partition's
//! reading, and a lower bound on the timestamp starts each partition at the first batch
//! the time index says may hold such a record. EXPLAIN shows the offset ranges a scan
//! reads; EXPLAIN ANALYZE how many batches it read.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use protocol::batch::{self, BatchHeader, RecordRef, Records};

use crate::source::{SourceDecoder, SourceRows};
use crate::topics::Topics;

/// Rows per Arrow batch a scan emits.
const ROWS_PER_BATCH: usize = 8192;
/// Bytes of stored batches read at a time.
const READ_BYTES: usize = 4 << 20;

pub(crate) const PARTITION: usize = 0;
pub(crate) const OFFSET: usize = 1;
pub(crate) const TIMESTAMP: usize = 2;
pub(crate) const KEY: usize = 3;
pub(crate) const VALUE: usize = 4;
pub(crate) const HEADERS: usize = 5;

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, true), Field::new("value", DataType::Binary, true)])
}

/// The columns of a topic read as a table.
pub fn raw_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_timestamp", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("_key", DataType::Binary, true),
        Field::new("_value", DataType::Binary, true),
        Field::new(
            "_headers",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(header_fields()), true))),
            true,
        ),
    ]))
}

/// A topic as a table.
pub struct TopicTable {
    topic: String,
    topics: Arc<dyn Topics>,
    schema: SchemaRef,
}

impl fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTable").field("topic", &self.topic).finish()
    }
}

impl TopicTable {
    pub fn new(topic: String, topics: Arc<dyn Topics>) -> Self {
        TopicTable { topic, topics, schema: raw_schema() }
    }
}

/// The offset ranges of `topic` to read under `restriction`, one per partition that has
/// any.
pub(crate) fn ranges(topics: &dyn Topics, topic: &str, restriction: &Restriction) -> Result<Vec<PartitionRange>> {
    let count = topics.partition_count(topic).unwrap_or(0);
    let mut out = Vec::new();
    for partition in 0..count {
        if restriction.partitions.as_ref().is_some_and(|p| !p.contains(&partition)) {
            continue;
        }
        let Some((log_start, high_watermark)) = topics.bounds(topic, partition) else { continue };
        let mut start = log_start.max(restriction.offset_start.unwrap_or(i64::MIN));
        let end = high_watermark.min(restriction.offset_end.unwrap_or(i64::MAX));
        if let Some(ts) = restriction.timestamp_start {
            match topics.offset_for_timestamp(topic, partition, ts).map_err(|e| DataFusionError::External(e.into()))? {
                Some(o) => start = start.max(o),
                None => start = end,
            }
        }
        if start < end {
            out.push(PartitionRange { partition, start, end });
        }
    }
    Ok(out)
}

/// The scan of `topic` under the pushed `filters`: the raw `columns` it reads, and for a
/// source the decoder that turns them into the source's rows.
pub(crate) fn scan(
    state: &dyn Session,
    topic: &str,
    topics: &Arc<dyn Topics>,
    filters: &[Expr],
    columns: Vec<usize>,
    limit: Option<usize>,
    decoder: Option<Arc<SourceDecoder>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let restriction = Restriction::from_filters(filters);
    let ranges = ranges(topics.as_ref(), topic, &restriction)?;
    let lanes = state.config().target_partitions().max(1).min(ranges.len().max(1));
    let times = (restriction.timestamp_start, restriction.timestamp_end);
    let exec = TopicScanExec::new(topic.to_string(), topics.clone(), columns, ranges, times, lanes, limit, decoder)?;
    Ok(Arc::new(exec))
}

/// Whether a filter narrows what is read (inexactly: DataFusion applies it to the rows too).
pub(crate) fn pushdown(filter: &Expr) -> TableProviderFilterPushDown {
    if Restriction::default().apply(filter) {
        TableProviderFilterPushDown::Inexact
    } else {
        TableProviderFilterPushDown::Unsupported
    }
}

#[async_trait]
impl TableProvider for TopicTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters.iter().map(|f| pushdown(f)).collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        scan(state, &self.topic, &self.topics, filters, columns, limit, None)
    }
}

/// What the pushed-down filters allow: a set of partitions, an offset range, an earliest
/// timestamp. `None` is no bound.
#[derive(Debug, Default, Clone)]
pub(crate) struct Restriction {
    pub partitions: Option<BTreeSet<i32>>,
    pub offset_start: Option<i64>,
    /// Exclusive.
    pub offset_end: Option<i64>,
    pub timestamp_start: Option<i64>,
    /// Exclusive.
    pub timestamp_end: Option<i64>,
}

impl Restriction {
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut r = Restriction::default();
        for f in filters {
            r.apply(f);
        }
        r
    }

    /// Narrows the restriction by `e`; whether `e` said anything it understood.
    pub fn apply(&mut self, e: &Expr) -> bool {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                let a = self.apply(left);
                let b = self.apply(right);
                a || b
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let Some(c) = column_of(left) {
                    self.compare(c, *op, right)
                } else if let (Some(c), Some(op)) = (column_of(right), op.swap()) {
                    self.compare(c, op, left)
                } else {
                    false
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) => match column_of(expr) {
                Some(c) => {
                    let a = self.compare(c, Operator::GtEq, low);
                    let b = self.compare(c, Operator::LtEq, high);
                    a || b
                }
                None => false,
            },
            Expr::InList(list) if !list.negated && column_of(&list.expr) == Some("_partition") => {
                let values: Option<BTreeSet<i32>> =
                    list.list.iter().map(|v| int_of(v).and_then(|v| i32::try_from(v).ok())).collect();
                match values {
                    Some(values) => {
                        self.keep_partitions(values);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    fn keep_partitions(&mut self, values: BTreeSet<i32>) {
        self.partitions = Some(match self.partitions.take() {
            Some(p) => p.intersection(&values).copied().collect(),
            None => values,
        });
    }

    fn compare(&mut self, column: &str, op: Operator, value: &Expr) -> bool {
        match column {
            "_partition" => match (op, int_of(value)) {
                (Operator::Eq, Some(v)) => {
                    self.keep_partitions(i32::try_from(v).into_iter().collect());
                    true
                }
                _ => false,
            },
            "_offset" => {
                let Some(v) = int_of(value) else { return false };
                let (start, end) = match op {
                    Operator::Eq => (Some(v), Some(v.saturating_add(1))),
                    Operator::Gt => (Some(v.saturating_add(1)), None),
                    Operator::GtEq => (Some(v), None),
                    Operator::Lt => (None, Some(v)),
                    Operator::LtEq => (None, Some(v.saturating_add(1))),
                    _ => return false,
                };
                if let Some(s) = start {
                    self.offset_start = Some(self.offset_start.map_or(s, |o| o.max(s)));
                }
                if let Some(e) = end {
                    self.offset_end = Some(self.offset_end.map_or(e, |o| o.min(e)));
                }
                true
            }
            // Bounds in whole milliseconds, rounded outwards: never narrower than the filter.
            "_timestamp" => {
                let Some(v) = timestamp_ms_of(value) else { return false };
                let (start, end) = match op {
                    Operator::Gt | Operator::GtEq => (Some(v), None),
                    Operator::Lt | Operator::LtEq => (None, Some(v.saturating_add(1))),
                    Operator::Eq => (Some(v), Some(v.saturating_add(1))),
                    _ => return false,
                };
                if let Some(s) = start {
                    self.timestamp_start = Some(self.timestamp_start.map_or(s, |o| o.max(s)));
                }
                if let Some(e) = end {
                    self.timestamp_end = Some(self.timestamp_end.map_or(e, |o| o.min(e)));
                }
                true
            }
            _ => false,
        }
    }
}

fn column_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
}

fn int_of(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(v)) => Some(*v as i64),
            ScalarValue::Int16(Some(v)) => Some(*v as i64),
            ScalarValue::Int32(Some(v)) => Some(*v as i64),
            ScalarValue::Int64(Some(v)) => Some(*v),
            ScalarValue::UInt8(Some(v)) => Some(*v as i64),
            ScalarValue::UInt16(Some(v)) => Some(*v as i64),
            ScalarValue::UInt32(Some(v)) => Some(*v as i64),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok(),
            _ => None,
        },
        Expr::Cast(c) => int_of(&c.expr),
        _ => None,
    }
}

/// A timestamp literal in milliseconds, rounded down.
fn timestamp_ms_of(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1000),
            ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
            ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1000)),
            ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
            _ => None,
        },
        Expr::Cast(c) => timestamp_ms_of(&c.expr),
        _ => None,
    }
}

/// Offsets `[start, end)` of one partition to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionRange {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// Reads a topic's partitions: DataFusion partition `i` (a "lane") reads every
/// `lanes`-th range in turn. For a source, a decoder turns the raw columns read into the
/// source's rows.
#[derive(Debug)]
pub struct TopicScanExec {
    topic: String,
    topics: Arc<dyn Topics>,
    /// The raw columns read (indexes into [`raw_schema`]) and their schema.
    columns: Vec<usize>,
    raw: SchemaRef,
    decoder: Option<Arc<SourceDecoder>>,
    /// What the scan emits.
    schema: SchemaRef,
    ranges: Vec<PartitionRange>,
    /// Records outside `[start, end)` (ms) are left out before anything else is done
    /// with them: the filters that say so are applied again above the scan.
    times: (Option<i64>, Option<i64>),
    lanes: usize,
    limit: Option<usize>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for dyn Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Topics")
    }
}

impl TopicScanExec {
    fn new(
        topic: String,
        topics: Arc<dyn Topics>,
        columns: Vec<usize>,
        ranges: Vec<PartitionRange>,
        times: (Option<i64>, Option<i64>),
        lanes: usize,
        limit: Option<usize>,
        decoder: Option<Arc<SourceDecoder>>,
    ) -> Result<Self> {
        let raw = Arc::new(raw_schema().project(&columns)?);
        let schema = decoder.as_ref().map_or_else(|| raw.clone(), |d| d.output.clone());
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(lanes),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(TopicScanExec {
            topic,
            topics,
            columns,
            raw,
            decoder,
            schema,
            ranges,
            times,
            lanes,
            limit,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for TopicScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let ranges: Vec<String> =
            self.ranges.iter().map(|r| format!("{}:{}..{}", r.partition, r.start, r.end)).collect();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                let names: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
                write!(f, "TopicScan: topic={}, ", self.topic)?;
                if let Some(d) = &self.decoder {
                    write!(f, "source={}, ", d.name)?;
                }
                write!(f, "offsets=[{}], ", ranges.join(", "))?;
                if self.times != (None, None) {
                    let bound = |b: Option<i64>| b.map_or(String::new(), |b| b.to_string());
                    write!(f, "timestamps=[{}..{}), ", bound(self.times.0), bound(self.times.1))?;
                }
                write!(f, "projection=[{}]", names.join(", "))?;
                if let Some(limit) = self.limit {
                    write!(f, ", limit={limit}")?;
                }
                Ok(())
            }
            DisplayFormatType::TreeRender => write!(f, "topic={}\noffsets=[{}]", self.topic, ranges.join(", ")),
        }
    }
}

impl ExecutionPlan for TopicScanExec {
    fn name(&self) -> &str {
        "TopicScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, lane: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let ranges: Vec<PartitionRange> = self.ranges.iter().skip(lane).step_by(self.lanes).copied().collect();
        let batches_read = MetricBuilder::new(&self.metrics).counter("batches_read", lane);
        let bytes_read = MetricBuilder::new(&self.metrics).counter("bytes_read", lane);
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let reader = Reader {
            topic: self.topic.clone(),
            topics: self.topics.clone(),
            raw: self.raw.clone(),
            decoder: self.decoder.clone(),
            columns: self.columns.clone(),
            times: self.times,
            limit: self.limit,
            batches_read,
            bytes_read,
        };
        builder.spawn_blocking(move || {
            reader.run(&ranges, |batch| tx.blocking_send(batch).is_ok());
            Ok(())
        });
        Ok(builder.build())
    }
}

/// Reads ranges of one lane and turns their records into Arrow batches.
struct Reader {
    topic: String,
    topics: Arc<dyn Topics>,
    raw: SchemaRef,
    decoder: Option<Arc<SourceDecoder>>,
    columns: Vec<usize>,
    times: (Option<i64>, Option<i64>),
    limit: Option<usize>,
    batches_read: Count,
    bytes_read: Count,
}

impl Reader {
    /// Emits batches until done, the limit is reached, or `emit` returns false (the
    /// query went away). A read error ends the stream with that error.
    fn run(&self, ranges: &[PartitionRange], mut emit: impl FnMut(Result<RecordBatch>) -> bool) {
        let mut sink = Sink::new(&self.columns, self.raw.clone(), self.decoder.clone());
        let mut total = 0usize;
        for range in ranges {
            let mut offset = range.start;
            while offset < range.end {
                let bytes = match self.topics.read(&self.topic, range.partition, offset, range.end, READ_BYTES) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = range.partition, error = %e, "sql read failed");
                        emit(Err(DataFusionError::Execution(format!(
                            "reading {} partition {} at offset {offset}: {e}",
                            self.topic, range.partition
                        ))));
                        return;
                    }
                };
                if bytes.is_empty() {
                    break;
                }
                self.bytes_read.add(bytes.len());
                let next = decode_into(&bytes, range, offset, self.times, &mut sink, &self.batches_read);
                if next <= offset {
                    break;
                }
                offset = next;
                while sink.len() >= ROWS_PER_BATCH {
                    let batch = sink.finish();
                    total += batch.as_ref().map_or(0, |b| b.num_rows());
                    let failed = batch.is_err();
                    if !emit(batch) || failed || self.limit.is_some_and(|l| total >= l) {
                        return;
                    }
                }
            }
        }
        if sink.len() > 0 {
            emit(sink.finish());
        }
    }
}

/// Decodes the stored batches in `bytes` into `sink`, keeping records in `[from, range.end)`
/// with timestamps in `times`; returns the offset after the last batch seen.
pub(crate) fn decode_into(
    bytes: &[u8],
    range: &PartitionRange,
    from: i64,
    times: (Option<i64>, Option<i64>),
    sink: &mut Sink,
    batches_read: &Count,
) -> i64 {
    let (ts_start, ts_end) = (times.0.unwrap_or(i64::MIN), times.1.unwrap_or(i64::MAX));
    let mut pos = 0;
    let mut next = from;
    while pos < bytes.len() {
        let Ok(header) = BatchHeader::parse(&bytes[pos..]) else { break };
        let size = header.size();
        if pos + size > bytes.len() {
            break;
        }
        let batch = &bytes[pos..pos + size];
        pos += size;
        next = header.last_offset() + 1;
        batches_read.add(1);
        // A batch whose newest record is older than the range has nothing for it.
        if header.is_control() || header.max_timestamp < ts_start {
            continue;
        }
        // Batches were checked (CRC included) when they were produced: records are read
        // in place, decompressed first if need be.
        let data = match batch::record_data(&header, batch) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, base_offset = header.base_offset, "undecodable batch skipped");
                continue;
            }
        };
        let log_append = header.has_log_append_time();
        for r in Records::new(&header, &data) {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, base_offset = header.base_offset, "rest of an undecodable batch skipped");
                    break;
                }
            };
            let offset = header.base_offset + r.offset_delta as i64;
            if offset < from || offset >= range.end {
                continue;
            }
            let timestamp =
                if log_append { header.max_timestamp } else { header.base_timestamp.wrapping_add(r.timestamp_delta) };
            if timestamp < ts_start || timestamp >= ts_end {
                continue;
            }
            sink.push(range.partition, offset, timestamp, &r);
        }
        if next >= range.end {
            break;
        }
    }
    next
}

/// Where a scan's records go: the raw columns read and, for a source, its decoded
/// columns built alongside.
pub(crate) struct Sink {
    rows: Rows,
    raw: SchemaRef,
    source: Option<(Arc<SourceDecoder>, SourceRows)>,
}

impl Sink {
    pub fn new(columns: &[usize], raw: SchemaRef, decoder: Option<Arc<SourceDecoder>>) -> Self {
        let source = decoder.map(|d| {
            let rows = d.rows();
            (d, rows)
        });
        Sink { rows: Rows::new(columns), raw, source }
    }

    pub fn len(&self) -> usize {
        self.rows.len
    }

    fn push(&mut self, partition: i32, offset: i64, timestamp: i64, r: &RecordRef) {
        if let Some((decoder, rows)) = &mut self.source {
            if rows.read(r.key, r.value) {
                rows.append(r.key, r.value);
            } else {
                rows.undecodable += 1;
                if decoder.skip {
                    return;
                }
                rows.append_nulls();
            }
        }
        self.rows.push(partition, offset, timestamp, r);
    }

    /// The rows so far as a batch of what the scan emits.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let raw = self.rows.finish(&self.raw)?;
        match &mut self.source {
            Some((decoder, rows)) => decoder.finish(&raw, rows),
            None => Ok(raw),
        }
    }
}

/// Column builders for the projected columns only.
struct Rows {
    partition: Option<Int32Builder>,
    offset: Option<Int64Builder>,
    timestamp: Option<TimestampMillisecondBuilder>,
    key: Option<BinaryBuilder>,
    value: Option<BinaryBuilder>,
    headers: Option<ListBuilder<StructBuilder>>,
    /// The raw columns in the order asked for.
    columns: Vec<usize>,
    len: usize,
}

impl Rows {
    fn new(columns: &[usize]) -> Self {
        let wants = |c: usize| columns.contains(&c);
        Rows {
            partition: wants(PARTITION).then(Int32Builder::new),
            offset: wants(OFFSET).then(Int64Builder::new),
            timestamp: wants(TIMESTAMP).then(TimestampMillisecondBuilder::new),
            key: wants(KEY).then(BinaryBuilder::new),
            value: wants(VALUE).then(BinaryBuilder::new),
            headers: wants(HEADERS).then(|| ListBuilder::new(StructBuilder::from_fields(header_fields(), 0))),
            columns: columns.to_vec(),
            len: 0,
        }
    }

    fn push(&mut self, partition: i32, offset: i64, timestamp: i64, r: &RecordRef) {
        self.len += 1;
        if let Some(b) = &mut self.partition {
            b.append_value(partition);
        }
        if let Some(b) = &mut self.offset {
            b.append_value(offset);
        }
        if let Some(b) = &mut self.timestamp {
            b.append_value(timestamp);
        }
        if let Some(b) = &mut self.key {
            b.append_option(r.key);
        }
        if let Some(b) = &mut self.value {
            b.append_option(r.value);
        }
        if let Some(b) = &mut self.headers {
            let entries = b.values();
            for (k, v) in r.headers() {
                entries
                    .field_builder::<StringBuilder>(0)
                    .expect("header key builder")
                    .append_value(String::from_utf8_lossy(k));
                entries.field_builder::<BinaryBuilder>(1).expect("header value builder").append_option(v);
                entries.append(true);
            }
            b.append(true);
        }
    }

    /// An Arrow batch of the rows so far.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| -> ArrayRef {
                match *c {
                    PARTITION => Arc::new(self.partition.as_mut().expect("built").finish()),
                    OFFSET => Arc::new(self.offset.as_mut().expect("built").finish()),
                    TIMESTAMP => Arc::new(self.timestamp.as_mut().expect("built").finish()),
                    KEY => Arc::new(self.key.as_mut().expect("built").finish()),
                    VALUE => Arc::new(self.value.as_mut().expect("built").finish()),
                    _ => Arc::new(self.headers.as_mut().expect("built").finish()),
                }
            })
            .collect();
        let rows = self.len;
        self.len = 0;
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    #[test]
    fn pushed_filters_become_partition_offset_and_time_bounds() {
        let mut r = Restriction::default();
        assert!(r.apply(&col("_offset").gt_eq(lit(10i64))));
        assert!(r.apply(&col("_offset").lt(lit(20i64))));
        // Literal first, as written `5 < _offset`: the tighter bound stays.
        assert!(r.apply(&lit(5i64).lt(col("_offset"))));
        assert!(r.apply(&col("_partition").in_list(vec![lit(1), lit(3)], false)));
        let ts = ScalarValue::TimestampMicrosecond(Some(5_000_999), None);
        assert!(r.apply(&col("_timestamp").gt_eq(lit(ts))));
        assert_eq!((r.offset_start, r.offset_end, r.timestamp_start), (Some(10), Some(20), Some(5000)));
        assert!(r.apply(&col("_timestamp").lt(lit(ScalarValue::TimestampMillisecond(Some(9000), None)))));
        assert_eq!(r.timestamp_end, Some(9001));
        assert_eq!(r.partitions, Some(BTreeSet::from([1, 3])));
        // Conjunctions are taken apart; a second partition filter intersects.
        assert!(r.apply(&col("_partition").eq(lit(3)).and(col("_offset").lt_eq(lit(14i64)))));
        assert_eq!((r.partitions.clone(), r.offset_end), (Some(BTreeSet::from([3])), Some(15)));

        // What says nothing about where to read is left to DataFusion alone.
        for e in [
            col("_value").is_null(),
            col("_offset").not_eq(lit(3i64)),
            col("_offset").lt(lit(3i64)).or(col("_offset").gt(lit(9i64))),
            col("_timestamp").not_eq(lit(ScalarValue::TimestampMillisecond(Some(1), None))),
            col("_key").eq(lit("k")),
        ] {
            assert!(!Restriction::default().apply(&e), "{e}");
        }
    }
}
