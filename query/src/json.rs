//! JSON objects decoded field by field into Arrow columns, one record at a time.
//!
//! A source's records are flat JSON objects (nested values are kept as JSON text). This
//! reads each one in a single pass over its bytes, straight from the stored record: a
//! field the source declares is converted to its column's type as it is met, any other
//! field is checked and skipped. A record decodes whole or not at all: every declared
//! field is converted (projected or not), and only when all of them fit are the
//! projected ones appended to their columns. So a record is undecodable, or not, in every
//! query alike.
//!
//! What fits a column:
//! - BOOLEAN: `true`, `false`.
//! - SMALLINT, INT, BIGINT: an integral number in range (`1`, `-7`, `2.0`, `1e3`), or a
//!   string holding one.
//! - REAL, DOUBLE: a number, or a string holding one (also `NaN`, `inf`).
//! - DECIMAL(p,s): a number or a string holding one, rounded half away from zero to `s`
//!   places; more than `p` digits do not fit.
//! - TEXT: a string; numbers and booleans as written.
//! - BYTEA: a base64 string.
//! - DATE: `YYYY-MM-DD`, or a number of days since 1970-01-01.
//! - TIMESTAMP, TIMESTAMPTZ: an RFC 3339-like string (no offset means UTC), or
//!   milliseconds since the epoch.
//! - JSON: any value, as its text without the whitespace between tokens.
//!
//! `null` and a missing field are NULL.

use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::kernels::cast_utils::{string_to_timestamp_nanos, Parser};
use datafusion::arrow::datatypes::Date32Type;
use datafusion::common::Result;

use crate::source::SqlType;

/// Nesting deeper than this is not decoded.
const MAX_DEPTH: usize = 128;

/// The fields a decoder looks for, by name, with their types.
#[derive(Debug, Clone)]
pub(crate) struct JsonFields {
    names: Vec<Box<[u8]>>,
    types: Vec<SqlType>,
}

impl JsonFields {
    pub fn new(fields: impl IntoIterator<Item = (String, SqlType)>) -> Self {
        let (names, types): (Vec<Box<[u8]>>, Vec<SqlType>) =
            fields.into_iter().map(|(n, t)| (n.into_bytes().into_boxed_slice(), t)).unzip();
        JsonFields { names, types }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }
}

/// A field's value, converted, between reading a record and appending it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(i128),
    /// Text in the record itself.
    Text(usize, usize),
    /// Text (or bytes) in the scratch buffer.
    Scratch(usize, usize),
}

/// One column being built.
enum Column {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMillisecondBuilder, Option<Arc<str>>),
}

impl Column {
    fn new(t: SqlType) -> Self {
        match t {
            SqlType::Boolean => Column::Bool(BooleanBuilder::new()),
            SqlType::SmallInt => Column::I16(Int16Builder::new()),
            SqlType::Int => Column::I32(Int32Builder::new()),
            SqlType::BigInt => Column::I64(Int64Builder::new()),
            SqlType::Real => Column::F32(Float32Builder::new()),
            SqlType::Double => Column::F64(Float64Builder::new()),
            SqlType::Decimal { precision, scale } => Column::Decimal(Decimal128Builder::new(), precision, scale),
            SqlType::Text | SqlType::Json => Column::Text(StringBuilder::new()),
            SqlType::Bytea | SqlType::Headers => Column::Bytes(BinaryBuilder::new()),
            SqlType::Date => Column::Date(Date32Builder::new()),
            SqlType::Timestamp => Column::Timestamp(TimestampMillisecondBuilder::new(), None),
            SqlType::TimestampTz => Column::Timestamp(TimestampMillisecondBuilder::new(), Some("+00:00".into())),
        }
    }

    fn append(&mut self, slot: Slot, record: &[u8], scratch: &[u8]) {
        // Text slots always hold UTF-8: the record was checked whole, and the scratch
        // is only filled from checked text (BYTEA's bytes go to byte columns).
        fn text(from: &[u8], a: usize, b: usize) -> &str {
            checked_text(&from[a..b])
        }
        match (self, slot) {
            (Column::Bool(b), Slot::Bool(v)) => b.append_value(v),
            (Column::I16(b), Slot::Int(v)) => b.append_value(v as i16),
            (Column::I32(b), Slot::Int(v)) => b.append_value(v as i32),
            (Column::I64(b), Slot::Int(v)) => b.append_value(v),
            (Column::F32(b), Slot::Float(v)) => b.append_value(v as f32),
            (Column::F64(b), Slot::Float(v)) => b.append_value(v),
            (Column::Decimal(b, ..), Slot::Decimal(v)) => b.append_value(v),
            (Column::Text(b), Slot::Text(x, y)) => b.append_value(text(record, x, y)),
            (Column::Text(b), Slot::Scratch(x, y)) => b.append_value(text(scratch, x, y)),
            (Column::Bytes(b), Slot::Scratch(x, y)) => b.append_value(&scratch[x..y]),
            (Column::Bytes(b), Slot::Text(x, y)) => b.append_value(&record[x..y]),
            (Column::Date(b), Slot::Int(v)) => b.append_value(v as i32),
            (Column::Timestamp(b, _), Slot::Int(v)) => b.append_value(v),
            (c, _) => c.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::I16(b) => b.append_null(),
            Column::I32(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::F32(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::Decimal(b, ..) => b.append_null(),
            Column::Text(b) => b.append_null(),
            Column::Bytes(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Timestamp(b, _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Decimal(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s)?),
            Column::Text(b) => Arc::new(b.finish()),
            Column::Bytes(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
        })
    }
}

/// Rows of decoded fields being built: [`FieldRows::read`] a record, then
/// [`FieldRows::append`] it (or [`FieldRows::append_nulls`]).
pub(crate) struct FieldRows {
    fields: JsonFields,
    /// The columns built, for the fields wanted (`None` for the others).
    columns: Vec<Option<Column>>,
    slots: Vec<Slot>,
    scratch: Vec<u8>,
    /// The keys of the last record read, in order, and the field each one is: records of
    /// a topic mostly have the same keys in the same order, so a key is first compared
    /// with the one at its place last time.
    seen: Vec<(Vec<u8>, Option<usize>)>,
}

impl FieldRows {
    /// Rows of `fields`, building columns only for those `wanted` says.
    pub fn new(fields: JsonFields, wanted: &[bool]) -> Self {
        let columns = fields.types.iter().zip(wanted).map(|(t, w)| w.then(|| Column::new(*t))).collect();
        let slots = vec![Slot::Null; fields.len()];
        FieldRows { fields, columns, slots, scratch: Vec::new(), seen: Vec::new() }
    }

    /// Reads one JSON object (`None`: no record, all NULLs); whether it decodes.
    pub fn read(&mut self, record: Option<&[u8]>) -> bool {
        self.slots.fill(Slot::Null);
        self.scratch.clear();
        let Some(record) = record else { return true };
        // Text is checked to be UTF-8 string by string (outside strings, JSON is ASCII).
        let mut c = Cursor { b: record, i: 0 };
        self.object(&mut c).is_some() && {
            c.ws();
            c.i == record.len()
        }
    }

    /// Reads a whole key as text, converted to the one field's type; whether it does.
    pub fn read_text(&mut self, key: Option<&[u8]>) -> bool {
        self.slots.fill(Slot::Null);
        self.scratch.clear();
        let Some(key) = key else { return true };
        let Ok(text) = std::str::from_utf8(key) else { return false };
        let t = self.fields.types[0];
        if t == SqlType::Bytea {
            self.slots[0] = Slot::Text(0, key.len());
            return true;
        }
        let trimmed = text.trim();
        let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
        match from_text(t, trimmed, start, &mut self.scratch) {
            Some(slot) => {
                self.slots[0] = slot;
                true
            }
            None => false,
        }
    }

    /// Appends the record last read.
    pub fn append(&mut self, record: Option<&[u8]>) {
        let record = record.unwrap_or_default();
        for (c, slot) in self.columns.iter_mut().zip(&self.slots) {
            if let Some(c) = c {
                c.append(*slot, record, &self.scratch);
            }
        }
    }

    /// Appends a row of NULLs.
    pub fn append_nulls(&mut self) {
        for c in self.columns.iter_mut().flatten() {
            c.append_null();
        }
    }

    /// The wanted columns built so far, in field order; the rows start again.
    pub fn finish(&mut self) -> Result<Vec<ArrayRef>> {
        self.columns.iter_mut().flatten().map(|c| c.finish()).collect()
    }

    /// The field named `key`, the `place`-th key of its object.
    fn field(&mut self, key: &[u8], place: usize) -> Option<usize> {
        if let Some((k, field)) = self.seen.get(place) {
            if same(k, key) {
                return *field;
            }
        }
        let field = self.fields.names.iter().position(|n| same(n, key));
        if place < self.seen.len() {
            self.seen[place].0.clear();
            self.seen[place].0.extend_from_slice(key);
            self.seen[place].1 = field;
        } else if place == self.seen.len() && place < 64 {
            self.seen.push((key.to_vec(), field));
        }
        field
    }

    fn object(&mut self, c: &mut Cursor) -> Option<()> {
        c.ws();
        c.eat(b'{')?;
        c.ws();
        if c.eat(b'}').is_some() {
            return Some(());
        }
        for place in 0.. {
            c.ws();
            let key = c.string_span()?;
            let field = if key.escaped {
                let mut k = Vec::new();
                unescape(&c.b[key.inner.clone()], &mut k)?;
                self.field(&k, place)
            } else {
                self.field(&c.b[key.inner.clone()], place)
            };
            c.ws();
            c.eat(b':')?;
            c.ws();
            match field {
                Some(f) => self.slots[f] = self.value(c, self.fields.types[f])?,
                None => c.skip_value(0)?,
            }
            c.ws();
            match c.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
        None
    }

    /// The value at the cursor converted to `t`; `None` if it is not JSON or does not fit.
    fn value(&mut self, c: &mut Cursor, t: SqlType) -> Option<Slot> {
        let start = c.i;
        match c.peek()? {
            b'n' => {
                c.literal(b"null")?;
                Some(Slot::Null)
            }
            _ if t == SqlType::Json => {
                c.skip_value(0)?;
                let from = self.scratch.len();
                minify(&c.b[start..c.i], &mut self.scratch);
                Some(Slot::Scratch(from, self.scratch.len()))
            }
            b'"' => {
                let s = c.string_span()?;
                if s.escaped {
                    let from = self.scratch.len();
                    unescape(&c.b[s.inner], &mut self.scratch)?;
                    let to = self.scratch.len();
                    if t == SqlType::Text {
                        return Some(Slot::Scratch(from, to));
                    }
                    let text = std::str::from_utf8(&self.scratch[from..to]).ok()?.to_string();
                    self.scratch.truncate(from);
                    from_text(t, &text, usize::MAX, &mut self.scratch)
                } else {
                    let text = checked_text(&c.b[s.inner.clone()]);
                    from_text(t, text, s.inner.start, &mut self.scratch)
                }
            }
            b't' | b'f' => {
                let v = c.peek()? == b't';
                c.literal(if v { b"true" } else { b"false" })?;
                match t {
                    SqlType::Boolean => Some(Slot::Bool(v)),
                    SqlType::Text => Some(Slot::Text(start, c.i)),
                    _ => None,
                }
            }
            b'-' | b'0'..=b'9' => {
                let number = c.number()?;
                if t == SqlType::Text {
                    return Some(Slot::Text(number.span.start, number.span.end));
                }
                from_number(t, &number, &c.b[number.span.clone()])
            }
            _ => None,
        }
    }
}

/// A string's text converted to `t`. `at` is where the text starts in the record (or
/// `usize::MAX` when it is not there as written: it is then copied if kept).
fn from_text(t: SqlType, text: &str, at: usize, scratch: &mut Vec<u8>) -> Option<Slot> {
    match t {
        SqlType::Text | SqlType::Json => {
            if at == usize::MAX {
                let from = scratch.len();
                scratch.extend_from_slice(text.as_bytes());
                Some(Slot::Scratch(from, scratch.len()))
            } else {
                Some(Slot::Text(at, at + text.len()))
            }
        }
        SqlType::Boolean => match text {
            "true" => Some(Slot::Bool(true)),
            "false" => Some(Slot::Bool(false)),
            _ => None,
        },
        SqlType::Bytea => {
            let from = scratch.len();
            base64::engine::general_purpose::STANDARD.decode_vec(text, scratch).ok()?;
            Some(Slot::Scratch(from, scratch.len()))
        }
        SqlType::Date => Date32Type::parse(text).map(|d| Slot::Int(d as i64)),
        SqlType::Timestamp | SqlType::TimestampTz => {
            string_to_timestamp_nanos(text).ok().map(|ns| Slot::Int(ns.div_euclid(1_000_000)))
        }
        SqlType::Real | SqlType::Double => text.trim().parse::<f64>().ok().map(Slot::Float),
        _ => {
            let text = text.trim();
            let mut c = Cursor { b: text.as_bytes(), i: 0 };
            let number = c.number()?;
            if number.span.end != text.len() {
                return None;
            }
            from_number(t, &number, text.as_bytes())
        }
    }
}

/// A JSON number (`text`, read as `n`) converted to `t`.
fn from_number(t: SqlType, n: &Number, text: &[u8]) -> Option<Slot> {
    let text = checked_text(text);
    let int = |min: i64, max: i64| -> Option<Slot> {
        let v = match n.integer() {
            Some(v) => v,
            None => {
                // `2.0`, `1e3`: integral values written otherwise.
                let f = text.parse::<f64>().ok()?;
                if f.fract() != 0.0 || !(-9.2e18..=9.2e18).contains(&f) {
                    return None;
                }
                f as i64
            }
        };
        (min..=max).contains(&v).then_some(Slot::Int(v))
    };
    match t {
        SqlType::SmallInt => int(i16::MIN as i64, i16::MAX as i64),
        SqlType::Int => int(i32::MIN as i64, i32::MAX as i64),
        SqlType::BigInt => int(i64::MIN, i64::MAX),
        SqlType::Real => {
            let v = text.parse::<f64>().ok()?;
            (v.abs() <= f32::MAX as f64).then_some(Slot::Float(v))
        }
        SqlType::Double => text.parse::<f64>().ok().filter(|v| v.is_finite()).map(Slot::Float),
        SqlType::Decimal { precision, scale } => match n.decimal(scale) {
            Some(v) => (v.unsigned_abs() < 10u128.pow(precision as u32)).then_some(Slot::Decimal(v)),
            None => decimal(text.as_bytes(), precision, scale).map(Slot::Decimal),
        },
        SqlType::Date => int(i32::MIN as i64, i32::MAX as i64),
        SqlType::Timestamp | SqlType::TimestampTz => int(i64::MIN, i64::MAX),
        _ => None,
    }
}

/// Bytes known to be UTF-8 as text. Every span of a record handed here is one the
/// cursor read: the inside of a string token (checked by [`Cursor::string_span`]), or a
/// number or literal token (ASCII by grammar); the scratch buffer holds only such spans,
/// with escapes resolved into characters or whitespace left out, and copies of `str`s.
fn checked_text(b: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: see above; checking again costs a tenth of a scan's time.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// Bytes a string token's scan stops at: quotes, backslashes, control characters, non-ASCII.
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x80 || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

/// A decimal number (JSON's grammar) as an integer of `scale` places, rounded half away
/// from zero; `None` if it has more than `precision` digits.
pub(crate) fn decimal(text: &[u8], precision: u8, scale: i8) -> Option<i128> {
    let (negative, text) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match text.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(e) => (&text[..e], std::str::from_utf8(&text[e + 1..]).ok()?.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = match mantissa.iter().position(|b| *b == b'.') {
        Some(p) if p + 1 < mantissa.len() => (&mantissa[..p], &mantissa[p + 1..]),
        Some(_) => return None,
        None => (mantissa, &[][..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    // The value is digits × 10^(exponent - frac.len()); we want it × 10^scale: keep the
    // leading `keep` digits, round on the next one, then scale up what is left to scale.
    let shift = scale as i64 + exponent as i64 - frac.len() as i64;
    let total = int.len() + frac.len();
    let dropped = if shift < 0 { (-shift) as usize } else { 0 };
    let keep = total.saturating_sub(dropped);
    let mut v: i128 = 0;
    for d in int.iter().chain(frac).take(keep) {
        v = v.checked_mul(10)?.checked_add((d - b'0') as i128)?;
    }
    // The first digit dropped decides, when it is the one right after the last kept.
    if dropped > 0 && dropped <= total && int.iter().chain(frac).nth(keep).is_some_and(|d| *d >= b'5') {
        v += 1;
    }
    if shift > 0 && v != 0 {
        v = v.checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?;
    }
    if v >= 10i128.pow(precision as u32) {
        return None;
    }
    Some(if negative { -v } else { v })
}

/// JSON text without the whitespace between its tokens (`text` is valid JSON).
fn minify(text: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// The text of a JSON string's inside with its escapes resolved, appended to `out`;
/// `None` for a bad escape.
fn unescape(inner: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *inner.get(i + 1)?;
        i += 2;
        let ch = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = |at: usize| -> Option<u32> {
                    u32::from_str_radix(std::str::from_utf8(inner.get(at..at + 4)?).ok()?, 16).ok()
                };
                let hi = hex(i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if inner.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let lo = hex(i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code)?
            }
            _ => return None,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    Some(())
}

/// A number token: where it is, and its digits as one integer with `frac` of them after
/// the point, when there is no exponent and they fit.
struct Number {
    span: Range<usize>,
    negative: bool,
    mantissa: Option<u64>,
    frac: u32,
}

impl Number {
    /// The number if it is an integer that fits an i64 (written without point or exponent).
    fn integer(&self) -> Option<i64> {
        let m = self.mantissa.filter(|_| self.frac == 0)? as i128;
        i64::try_from(if self.negative { -m } else { m }).ok()
    }

    /// The number as an integer of `scale` places, rounded half away from zero, when
    /// that is simple (else [`decimal`] reads its text).
    fn decimal(&self, scale: i8) -> Option<i128> {
        let m = self.mantissa? as i128;
        let shift = scale as i32 - self.frac as i32;
        let v = if shift >= 0 {
            m.checked_mul(10i128.checked_pow(shift as u32)?)?
        } else {
            let div = 10i128.checked_pow((-shift) as u32)?;
            let (q, r) = (m / div, m % div);
            if r * 2 >= div {
                q + 1
            } else {
                q
            }
        };
        Some(if self.negative { -v } else { v })
    }
}

/// Whether two short byte strings are equal (compared inline: keys are a few bytes).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Where a string token is: its inside (between the quotes), and whether it has escapes.
struct StringSpan {
    inner: Range<usize>,
    escaped: bool,
}

/// A reader over one JSON text.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + word.len())? == word).then(|| self.i += word.len())
    }

    /// A string token at the cursor: its escapes are checked for their shape, its text
    /// for being UTF-8.
    fn string_span(&mut self) -> Option<StringSpan> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            while self.b.get(self.i).is_some_and(|b| !STOP[*b as usize]) {
                self.i += 1;
            }
            let b = self.next()?;
            match b {
                b'"' => {
                    let inner = start..self.i - 1;
                    if !ascii {
                        std::str::from_utf8(&self.b[inner.clone()]).ok()?;
                    }
                    return Some(StringSpan { inner, escaped });
                }
                0x80.. => ascii = false,
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A number token at the cursor, by JSON's grammar.
    fn number(&mut self) -> Option<Number> {
        let start = self.i;
        // Digits go into `mantissa` while it cannot overflow (19 digits).
        let mut mantissa: u64 = 0;
        let mut count = 0u32;
        let mut digits = |c: &mut Self| -> usize {
            let from = c.i;
            while let Some(d @ b'0'..=b'9') = c.peek() {
                mantissa = mantissa.wrapping_mul(10).wrapping_add((d - b'0') as u64);
                count += 1;
                c.i += 1;
            }
            c.i - from
        };
        let negative = self.eat(b'-').is_some();
        match self.peek()? {
            b'0' if digits(self) > 1 => return None, // a leading zero
            b'0'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        let mut frac = 0;
        if self.eat(b'.').is_some() {
            frac = digits(self);
            if frac == 0 {
                return None;
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            exponent = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let from = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.i += 1;
            }
            if self.i == from {
                return None;
            }
        }
        let exact = !exponent && count <= 19;
        Some(Number { span: start..self.i, negative, mantissa: exact.then_some(mantissa), frac: frac as u32 })
    }

    /// Checks and skips one value of any kind.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string_span().map(|_| ()),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string_span()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type};

    use super::*;

    fn rows(fields: &[(&str, SqlType)]) -> FieldRows {
        let f = JsonFields::new(fields.iter().map(|(n, t)| (n.to_string(), *t)));
        FieldRows::new(f, &vec![true; fields.len()])
    }

    /// Reads each record and appends it (or NULLs); which ones decoded.
    fn feed(r: &mut FieldRows, records: &[&str]) -> Vec<bool> {
        records
            .iter()
            .map(|rec| {
                let ok = r.read(Some(rec.as_bytes()));
                if ok {
                    r.append(Some(rec.as_bytes()));
                } else {
                    r.append_nulls();
                }
                ok
            })
            .collect()
    }

    #[test]
    fn objects_decode_field_by_field_and_bad_records_are_found() {
        let mut r = rows(&[("id", SqlType::BigInt), ("name", SqlType::Text), ("qty", SqlType::SmallInt)]);
        let ok = feed(
            &mut r,
            &[
                r#"{"id": 1, "name": "a\"b\u00e9\ud83d\ude00", "qty": 7, "other": {"x": [1, 2.5e3, null, true]}}"#,
                r#" {"qty":"12","name":42,"id":2.0} "#,
                r#"{"id": 3}"#,
                r#"not json"#,
                r#"{"id": 4} {"id": 5}"#,
                r#"{"id": 6, "qty": 40000}"#,
                r#"{"id": 1.5}"#,
                r#"[1]"#,
                r#"{"id": 7, "name": "tab	inside"}"#,
                r#"{"id": 8, "x": [1,]}"#,
                r#"{"id": 9, "name": "bad \q escape"}"#,
                r#"{"id": null, "name": null}"#,
            ],
        );
        assert_eq!(ok, [true, true, true, false, false, false, false, false, false, false, false, true]);
        let cols = r.finish().unwrap();
        let id = cols[0].as_primitive::<Int64Type>();
        let name = cols[1].as_string::<i32>();
        let qty = cols[2].as_primitive::<Int16Type>();
        assert_eq!((id.value(0), id.value(1), id.value(2)), (1, 2, 3));
        assert_eq!(name.value(0), "a\"bé😀");
        assert_eq!((name.value(1), name.is_null(2)), ("42", true));
        assert_eq!((qty.value(0), qty.value(1), qty.is_null(2)), (7, 12, true));
        assert!((3..12).all(|i| id.is_null(i) && name.is_null(i) && qty.is_null(i)));

        // Not UTF-8 in a string or outside one, a leading zero, keys in another order.
        for bad in [&b"{\"name\": \"\xff\"}"[..], b"{\"id\": 1, \xc3\xa9: 2}", b"{\"id\": 01}"] {
            assert!(!r.read(Some(bad)), "{}", String::from_utf8_lossy(bad));
        }
        let record = br#"{"qty": 3, "id": -9223372036854775808, "name": "\u00e9t\u00e9"}"#;
        assert!(r.read(Some(record)));
        r.append(Some(record));
        let cols = r.finish().unwrap();
        let id = cols[0].as_primitive::<Int64Type>();
        assert_eq!((id.value(0), cols[1].as_string::<i32>().value(0)), (i64::MIN, "été"));
    }

    #[test]
    fn only_wanted_fields_are_built_but_every_field_is_checked() {
        let f = JsonFields::new([("a".to_string(), SqlType::Int), ("b".to_string(), SqlType::Int)]);
        let mut r = FieldRows::new(f, &[false, true]);
        assert_eq!(feed(&mut r, &[r#"{"a": 1, "b": 2}"#, r#"{"a": "x", "b": 3}"#]), [true, false]);
        let cols = r.finish().unwrap();
        assert_eq!(cols.len(), 1);
        let b = cols[0].as_primitive::<Int32Type>();
        assert_eq!((b.value(0), b.is_null(1)), (2, true));
    }

    #[test]
    fn numbers_dates_times_bytes_and_json_convert() {
        let mut r = rows(&[
            ("n", SqlType::Decimal { precision: 6, scale: 2 }),
            ("d", SqlType::Double),
            ("day", SqlType::Date),
            ("at", SqlType::TimestampTz),
            ("y", SqlType::Bytea),
            ("j", SqlType::Json),
        ]);
        let ok = feed(
            &mut r,
            &[
                r#"{"n": 1234.565, "d": "1e-3", "day": "2024-02-29", "at": "2024-02-29T23:59:59.123+01:00", "y": "AQID/w==", "j": { "a" : [1, "x y"] }}"#,
                r#"{"n": "-0.004", "d": 2, "day": 1, "at": 1000, "j": "s"}"#,
                r#"{"n": 1.5e2}"#,
                r#"{"n": 10000}"#,
                r#"{"y": "%%%"}"#,
                r#"{"day": "yesterday"}"#,
            ],
        );
        assert_eq!(ok, [true, true, true, false, false, false]);
        let cols = r.finish().unwrap();
        let n = cols[0].as_primitive::<Decimal128Type>();
        assert_eq!((n.value(0), n.value(1), n.value(2)), (123457, 0, 15000));
        assert_eq!(cols[1].as_primitive::<Float64Type>().value(0), 0.001);
        let day = cols[2].as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        assert_eq!((day.value(0), day.value(1)), (19782, 1));
        let at = cols[3].as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!((at.value(0), at.value(1)), (1_709_247_599_123, 1000));
        assert_eq!(cols[4].as_binary::<i32>().value(0), [1, 2, 3, 255]);
        let j = cols[5].as_string::<i32>();
        assert_eq!((j.value(0), j.value(1)), (r#"{"a":[1,"x y"]}"#, r#""s""#));
    }

    #[test]
    fn decimals_round_half_away_from_zero_and_keep_their_precision() {
        for (text, p, s, want) in [
            ("12345.67", 7, 2, Some(1234567)),
            ("0.005", 3, 2, Some(1)),
            ("-0.005", 3, 2, Some(-1)),
            ("0.0049", 3, 2, Some(0)),
            ("0.00000001", 3, 2, Some(0)),
            ("99.995", 4, 2, None),
            ("1e2", 5, 2, Some(10000)),
            ("12e-1", 2, 0, Some(1)),
            ("100000000000000000000000000000000000000", 38, 0, None),
            ("1.", 3, 0, None),
            ("x", 3, 0, None),
        ] {
            assert_eq!(decimal(text.as_bytes(), p, s), want, "{text}");
        }
    }

    #[test]
    fn whole_keys_read_as_text() {
        let mut r = rows(&[("k", SqlType::Int)]);
        assert!(r.read_text(Some(b" 42 ")));
        r.append(Some(b" 42 "));
        assert!(!r.read_text(Some(b"x")));
        r.append_nulls();
        let cols = r.finish().unwrap();
        assert_eq!(cols[0].as_primitive::<Int32Type>().value(0), 42);
    }

    /// A small deterministic random source (xorshift).
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_value(r: &mut Random, depth: u32) -> serde_json::Value {
        use serde_json::Value as V;
        match r.below(if depth > 3 { 5 } else { 7 }) {
            0 => V::Null,
            1 => V::Bool(r.below(2) == 0),
            2 => V::from(r.below(u64::MAX) as i64 >> r.below(64)),
            3 => V::from((r.below(2_000_000) as f64 - 1e6) / 1000.0),
            4 => V::String(
                (0..r.below(6)).map(|_| ['a', 'é', '"', '\\', '\n', '😀', ' ', '\u{1}'][r.below(8) as usize]).collect(),
            ),
            5 => V::Array((0..r.below(4)).map(|_| random_value(r, depth + 1)).collect()),
            _ => V::Object((0..r.below(4)).map(|i| (format!("k{i}"), random_value(r, depth + 1))).collect()),
        }
    }

    /// Records of random JSON, written with random whitespace, then mangled: the decoder
    /// agrees with serde_json on which are objects, and on the values of the fields.
    #[test]
    fn decoding_agrees_with_serde_json_on_random_and_mangled_records() {
        let mut r = Random(0x9e3779b97f4a7c15);
        let fields = [("a", SqlType::BigInt), ("b", SqlType::Double), ("c", SqlType::Text), ("d", SqlType::Json)];
        let mut rows = rows(&fields);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let mut object = serde_json::Map::new();
            for k in ["a", "b", "c", "d", "e"] {
                if r.below(4) > 0 {
                    object.insert(k.to_string(), random_value(&mut r, 0));
                }
            }
            let mut text = String::new();
            for ch in serde_json::to_string(&object).unwrap().chars() {
                if matches!(ch, '{' | '}' | '[' | ']' | ',' | ':') && r.below(3) == 0 {
                    text.push([' ', '\n', '\t'][r.below(3) as usize]);
                }
                text.push(ch);
            }
            let mut bytes = text.into_bytes();
            if r.below(3) == 0 {
                let at = r.below(bytes.len() as u64 + 1) as usize;
                match r.below(3) {
                    0 => bytes.truncate(at),
                    1 => bytes.insert(at, b"{}[]\",: x"[r.below(9) as usize]),
                    _ => {
                        if at < bytes.len() {
                            bytes.remove(at);
                        }
                    }
                }
            }
            let oracle = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok();
            let ok = rows.read(Some(&bytes));
            let Some(oracle) = oracle else {
                assert!(!ok, "not JSON, but decoded: {}", String::from_utf8_lossy(&bytes));
                continue;
            };
            // What each field must be, per serde_json; `None` if it does not fit.
            use serde_json::Value as V;
            let want_a = match oracle.get("a") {
                None | Some(V::Null) => Some(None),
                Some(V::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e18).map(|f| Some(f as i64))),
                Some(V::String(s)) => s.parse::<i64>().ok().map(Some),
                _ => None,
            };
            let want_b = match oracle.get("b") {
                None | Some(V::Null) => Some(None),
                Some(V::Number(n)) => n.as_f64().map(Some),
                Some(V::String(s)) => s.trim().parse::<f64>().ok().map(Some),
                _ => None,
            };
            let want_c = match oracle.get("c") {
                None | Some(V::Null) => Some(None),
                Some(V::String(s)) => Some(Some(s.clone())),
                Some(v @ (V::Number(_) | V::Bool(_))) => Some(Some(v.to_string())),
                _ => None,
            };
            let want_d = match oracle.get("d") {
                None | Some(V::Null) => None,
                Some(v) => Some(v.clone()),
            };
            let fits = want_a.is_some() && want_b.is_some() && want_c.is_some();
            assert_eq!(ok, fits, "{}", String::from_utf8_lossy(&bytes));
            if !ok {
                continue;
            }
            decoded += 1;
            rows.append(Some(&bytes));
            let cols = rows.finish().unwrap();
            let a = cols[0].as_primitive::<Int64Type>();
            assert_eq!(a.is_valid(0).then(|| a.value(0)), want_a.unwrap());
            let b = cols[1].as_primitive::<Float64Type>();
            assert_eq!(b.is_valid(0).then(|| b.value(0)), want_b.unwrap());
            let c = cols[2].as_string::<i32>();
            match oracle.get("c") {
                // Numbers and booleans as written: the same value.
                Some(v @ (V::Number(_) | V::Bool(_))) => {
                    assert_eq!(&serde_json::from_str::<V>(c.value(0)).unwrap(), v)
                }
                _ => assert_eq!(c.is_valid(0).then(|| c.value(0).to_string()), want_c.unwrap()),
            }
            let d = cols[3].as_string::<i32>();
            let d = d.is_valid(0).then(|| serde_json::from_str::<serde_json::Value>(d.value(0)).unwrap());
            assert_eq!(d, want_d);
        }
        assert!(decoded > 2_000, "{decoded} records decoded");
    }
}
