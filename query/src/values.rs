//! Arrow values as SQL clients see them: PostgreSQL type names and text forms, and JSON
//! for the HTTP endpoint.

use std::fmt::Write;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The PostgreSQL name of the type a column of `t` is shown as.
pub fn pg_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            "numeric"
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::Null => "text",
        _ => "json",
    }
}

/// Formatting as PostgreSQL's text output does it where Arrow's differs: a space between
/// date and time, no "T".
fn format_options() -> FormatOptions<'static> {
    FormatOptions::new()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
}

/// Writes `array[row]` as PostgreSQL's text form; `None` for NULL.
pub fn pg_text(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Boolean => (if array.as_boolean().value(row) { "t" } else { "f" }).to_string(),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Binary => hex(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => hex(array.as_binary::<i64>().value(row)),
        DataType::BinaryView => hex(array.as_binary_view().value(row)),
        _ => {
            let options = format_options();
            match ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(f) => f.value(row).to_string(),
                Err(e) => format!("<{e}>"),
            }
        }
    })
}

/// A float as PostgreSQL writes it: the shortest text that reads back the same, without a
/// trailing `.0`, in exponent form when very small or large; `NaN`, `Infinity`.
fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        let e = format!("{v:e}");
        match e.split_once('e') {
            Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
            _ => e,
        }
    } else {
        format!("{v}")
    }
}

/// `\x` and the bytes in hex, as PostgreSQL shows bytea.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends `array[row]` as a JSON value: numbers and booleans as such, everything else
/// as its PostgreSQL text form in a string.
pub fn push_json(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    macro_rules! num {
        ($t:ty) => {{
            let _ = write!(out, "{}", array.as_primitive::<$t>().value(row));
        }};
    }
    match array.data_type() {
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 | DataType::Float64 => {
            let v = if array.data_type() == &DataType::Float32 {
                array.as_primitive::<Float32Type>().value(row) as f64
            } else {
                array.as_primitive::<Float64Type>().value(row)
            };
            if v.is_finite() {
                let _ = write!(out, "{v}");
            } else {
                push_string(out, &v.to_string());
            }
        }
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) { "true" } else { "false" }),
        _ => push_string(out, &pg_text(array, row).unwrap_or_default()),
    }
}

fn push_string(out: &mut String, s: &str) {
    // serde_json writes a str as a JSON string with every escape it needs.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}
