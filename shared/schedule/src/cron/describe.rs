//! English rendering of an expression for the default schedule description.
//!
//! CloudStack renders the Spring expression with cron-utils' English descriptor;
//! its exact wording is not a contract (it changes between cron-utils releases), so
//! this aims for the same kind of text from the canonical bit sets: two expressions
//! that select the same times read the same.

use super::{CronExpr, ALL_DAYS_OF_MONTH, ALL_DAYS_OF_WEEK, ALL_HOURS, ALL_MINUTES, ALL_MONTHS};

const MONTHS: [&str; 13] = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A selected set, summarised.
enum Shape {
    All,
    /// `first, first+step, ...` up to the field's end, with more than one value.
    Every {
        step: u32,
        first: u32,
    },
    /// Runs of consecutive values, each `(from, to)`.
    Runs(Vec<(u32, u32)>),
}

fn values(bits: u64, min: u32, max: u32) -> Vec<u32> {
    (min..=max).filter(|v| bits >> v & 1 == 1).collect()
}

fn shape(bits: u64, all: u64, min: u32, max: u32) -> Shape {
    if bits == all {
        return Shape::All;
    }
    let vals = values(bits, min, max);
    if vals.len() >= 3 {
        let step = vals[1] - vals[0];
        let regular = vals.windows(2).all(|w| w[1] - w[0] == step);
        if step > 1 && regular && vals[0] - min < step && max - vals[vals.len() - 1] < step {
            return Shape::Every {
                step,
                first: vals[0],
            };
        }
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for v in vals {
        match runs.last_mut() {
            Some((_, to)) if *to + 1 == v => *to = v,
            _ => runs.push((v, v)),
        }
    }
    Shape::Runs(runs)
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {}", init.join(", "), last),
    }
}

fn runs_text(runs: &[(u32, u32)], name: impl Fn(u32) -> String) -> String {
    let mut parts: Vec<String> = Vec::new();
    for &(a, b) in runs {
        match b - a {
            0 => parts.push(name(a)),
            // Two neighbours read better listed than as a range.
            1 => {
                parts.push(name(a));
                parts.push(name(b));
            }
            _ => parts.push(format!("{} through {}", name(a), name(b))),
        }
    }
    join(&parts)
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn single(shape: &Shape) -> Option<u32> {
    match shape {
        Shape::Runs(runs) if runs.len() == 1 && runs[0].0 == runs[0].1 => Some(runs[0].0),
        _ => None,
    }
}

fn time_part(expr: &CronExpr) -> String {
    let minutes = shape(expr.minutes, ALL_MINUTES, 0, 59);
    let hours = shape(expr.hours as u64, ALL_HOURS as u64, 0, 23);
    if let (Some(m), Some(h)) = (single(&minutes), single(&hours)) {
        return format!("at {h:02}:{m:02}");
    }
    // A handful of exact clock times reads best as a list of times.
    if let (Some(m), Shape::Runs(_)) = (single(&minutes), &hours) {
        let hs = values(expr.hours as u64, 0, 23);
        if hs.len() <= 4 {
            let times: Vec<String> = hs.iter().map(|h| format!("{h:02}:{m:02}")).collect();
            return format!("at {}", join(&times));
        }
    }
    let minute_text = match &minutes {
        Shape::All => "every minute".to_string(),
        Shape::Every { step, first: 0 } => format!("every {step} minutes"),
        Shape::Every { step, first } => {
            format!("every {step} minutes starting at minute {first}")
        }
        Shape::Runs(runs) => {
            let many = runs.len() > 1 || runs[0].0 != runs[0].1;
            format!(
                "at minute{} {}",
                if many { "s" } else { "" },
                runs_text(runs, |v| v.to_string())
            )
        }
    };
    let hour_text = match &hours {
        Shape::All => {
            if matches!(minutes, Shape::Runs(_)) {
                " past every hour".to_string()
            } else {
                String::new()
            }
        }
        Shape::Every { step, first: 0 } => format!(" past every {} hour", ordinal(*step)),
        Shape::Every { step, first } => {
            format!(" past every {} hour from {first:02}:00", ordinal(*step))
        }
        Shape::Runs(runs) if runs.len() == 1 && runs[0].0 != runs[0].1 => {
            format!(" between {:02}:00 and {:02}:59", runs[0].0, runs[0].1)
        }
        Shape::Runs(runs) => {
            let many = runs.len() > 1 || runs[0].0 != runs[0].1;
            format!(
                " past hour{} {}",
                if many { "s" } else { "" },
                runs_text(runs, |v| format!("{v:02}"))
            )
        }
    };
    format!("{minute_text}{hour_text}")
}

fn day_part(expr: &CronExpr) -> String {
    let dom = shape(expr.days_of_month as u64, ALL_DAYS_OF_MONTH as u64, 1, 31);
    let dow = shape(expr.days_of_week as u64, ALL_DAYS_OF_WEEK as u64, 0, 6);
    let weekday_text = match &dow {
        Shape::All => None,
        Shape::Every { .. } | Shape::Runs(_) => {
            let runs = match shape_runs(expr.days_of_week as u64, 0, 6) {
                r if r.len() > 1 && r[0].0 == 0 && r[r.len() - 1].1 == 6 => {
                    // Wrap Saturday..Sunday into one run: "Friday through Sunday".
                    let mut r = r;
                    let first = r.remove(0);
                    let last = r.pop().unwrap_or(first);
                    let mut wrapped = vec![(last.0, first.1 + 7)];
                    wrapped.extend(r);
                    wrapped
                }
                r => r,
            };
            Some(runs_text(&runs, |v| WEEKDAYS[(v % 7) as usize].to_string()))
        }
    };
    let dom_text = match &dom {
        Shape::All => None,
        Shape::Every { step, first } => Some(format!(
            "every {step} days of the month starting on the {}",
            ordinal(*first)
        )),
        Shape::Runs(runs) => Some(format!("on the {} of the month", runs_text(runs, ordinal))),
    };
    match (dom_text, weekday_text) {
        (None, None) => "every day".to_string(),
        (None, Some(w)) => format!("on {w}"),
        (Some(d), None) => d,
        (Some(d), Some(w)) => format!("{d} if it is a {w}"),
    }
}

fn shape_runs(bits: u64, min: u32, max: u32) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for v in values(bits, min, max) {
        match runs.last_mut() {
            Some((_, to)) if *to + 1 == v => *to = v,
            _ => runs.push((v, v)),
        }
    }
    runs
}

fn month_part(expr: &CronExpr) -> Option<String> {
    match shape(expr.months as u64, ALL_MONTHS as u64, 1, 12) {
        Shape::All => None,
        Shape::Every { step, first } => Some(format!(
            "every {step} months starting in {}",
            MONTHS[first as usize]
        )),
        Shape::Runs(runs) => Some(format!(
            "in {}",
            runs_text(&runs, |m| MONTHS[m as usize].to_string())
        )),
    }
}

pub(super) fn describe(expr: &CronExpr) -> String {
    let mut text = format!("{} {}", time_part(expr), day_part(expr));
    if let Some(months) = month_part(expr) {
        text.push(' ');
        text.push_str(&months);
    }
    text
}
