//! Text to bit sets, following Spring's `CronExpression` field rules.

use super::{CronError, CronExpr, CronField};

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
/// Spring numbers weekday names Monday = 1 .. Sunday = 7; keeping that numbering is
/// what makes `SUN-FRI` (Sunday as a range start means 0) and `FRI-SUN` behave as there.
const DAY_NAMES: [&str; 7] = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

pub(super) fn parse(text: &str) -> Result<CronExpr, CronError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(CronError::FieldCount {
            found: fields.len(),
        });
    }
    let minutes = parse_field(fields[0], CronField::Minute)?;
    let hours = parse_field(fields[1], CronField::Hour)?;
    let days_of_month = parse_field(fields[2], CronField::DayOfMonth)?;
    let months = parse_field(fields[3], CronField::Month)?;
    let raw_dow = parse_field(fields[4], CronField::DayOfWeek)?;
    // 7 and 0 are the same Sunday.
    let days_of_week = ((raw_dow | (raw_dow >> 7)) & 0x7f) as u8;

    let expr = CronExpr {
        source: fields.join(" "),
        minutes,
        hours: hours as u32,
        days_of_month: days_of_month as u32,
        months: months as u16,
        days_of_week,
    };
    if !satisfiable(&expr) {
        // Spring accepts e.g. `0 0 30 2 *` and CloudStack then silently disables the
        // schedule when no next time is found; refusing it up front tells the user why.
        return Err(CronError::NeverFires);
    }
    Ok(expr)
}

/// Some selected month has some selected day. Weekdays need no check: over the
/// 400-year Gregorian cycle every (month, day) pair falls on every weekday.
fn satisfiable(expr: &CronExpr) -> bool {
    const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12).any(|m| {
        expr.matches_month(m) && (1..=LONGEST[m as usize]).any(|d| expr.matches_day_of_month(d))
    })
}

fn parse_field(text: &str, field: CronField) -> Result<u64, CronError> {
    if text == "?" {
        return match field {
            CronField::DayOfMonth | CronField::DayOfWeek => Ok(range_bits(star_range(field), 1)),
            _ => Err(CronError::QuestionMark { field }),
        };
    }
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(CronError::EmptyItem { field });
        }
        if item.contains('?') {
            return Err(CronError::QuestionMark { field });
        }
        bits |= parse_item(item, field).map_err(|e| quartz_hint(e, item, field))?;
    }
    Ok(bits)
}

/// Spring also accepts Quartz's `L`, `W` and `#` in the day fields; say so by name
/// instead of reporting a puzzling "invalid value".
fn quartz_hint(error: CronError, item: &str, field: CronField) -> CronError {
    let upper = item.to_ascii_uppercase();
    let quartz = matches!(field, CronField::DayOfMonth | CronField::DayOfWeek)
        && (upper.contains('#')
            || upper.starts_with('L')
            || upper.ends_with('L')
            || upper.ends_with('W'));
    match error {
        CronError::InvalidValue { .. } if quartz => CronError::Unsupported {
            field,
            text: item.to_string(),
        },
        other => other,
    }
}

fn parse_item(item: &str, field: CronField) -> Result<u64, CronError> {
    let (_, max) = field.bounds();
    let (range_text, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(parse_step(s, field)?)),
        None => (item, None),
    };
    let (lo, hi) = if range_text == "*" {
        star_range(field)
    } else if let Some((a, b)) = range_text.split_once('-') {
        let mut a = parse_value(a, field)?;
        let b = parse_value(b, field)?;
        if field == CronField::DayOfWeek && a == 7 {
            // Sunday opening a range is day 0, as in Spring (`SUN-FRI`).
            a = 0;
        }
        if a > b {
            return Err(CronError::ReversedRange {
                field,
                text: range_text.to_string(),
            });
        }
        (a, b)
    } else {
        let v = parse_value(range_text, field)?;
        // `a/n` means a..max stepping by n; a bare value is just itself.
        if step.is_some() {
            (v, max)
        } else {
            (v, v)
        }
    };
    Ok(range_bits((lo, hi), step.unwrap_or(1)))
}

fn star_range(field: CronField) -> (u32, u32) {
    match field {
        // Spring's `*` for weekdays is Monday(1)..Sunday(7); it matters for `*/n`.
        CronField::DayOfWeek => (1, 7),
        _ => field.bounds(),
    }
}

fn range_bits((lo, hi): (u32, u32), step: u32) -> u64 {
    let mut bits = 0u64;
    let mut v = lo;
    while v <= hi {
        bits |= 1 << v;
        v += step;
    }
    bits
}

fn parse_step(text: &str, field: CronField) -> Result<u32, CronError> {
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(CronError::InvalidStep {
            field,
            text: text.to_string(),
        }),
    }
}

fn name_value(text: &str, field: CronField) -> Option<u32> {
    let names: &[&str] = match field {
        CronField::Month => &MONTH_NAMES,
        CronField::DayOfWeek => &DAY_NAMES,
        _ => return None,
    };
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
        .map(|i| i as u32 + 1)
}

fn parse_value(text: &str, field: CronField) -> Result<u32, CronError> {
    let (min, max) = field.bounds();
    if let Some(v) = name_value(text, field) {
        return Ok(v);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CronError::InvalidValue {
            field,
            value: text.to_string(),
        });
    }
    let value = text.parse::<u32>().map_err(|_| CronError::InvalidValue {
        field,
        value: text.to_string(),
    })?;
    if value < min || value > max {
        return Err(CronError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(value)
}
