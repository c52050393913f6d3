//! CSV files: memberships only, one per row, under a header naming `group` and `email`
//! and optionally `key`.

use std::path::Path;

use super::error::Errors;
use super::structured::Loc;
use crate::model::Origin;

/// One membership row. All three values carry the row's line.
#[derive(Debug)]
pub(super) struct Row {
    /// The group's display name.
    pub group: Loc,
    /// The group's key when the row gives a non-empty one; default is `group`.
    pub key: Option<Loc>,
    /// The member's email.
    pub email: Loc,
}

/// Which column holds what.
struct Columns {
    group: usize,
    email: usize,
    key: Option<usize>,
}

/// The columns a CSV file may have.
const KNOWN: &str = r#""group", "email" and optionally "key""#;

/// Reads the rows of one CSV file. Values are trimmed; the row checks (emails, names)
/// are the caller's. Errors are recorded in `errors`; rows with errors are left out.
pub(super) fn parse(text: &str, file: &Path, errors: &mut Errors) -> Vec<Row> {
    let origin = |line: Option<u64>| Origin {
        file: file.into(),
        line: line.and_then(|l| usize::try_from(l).ok()),
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            errors.push(origin(e.position().map(|p| p.line())), csv_message(&e));
            return Vec::new();
        }
    };
    let header_line = header.position().map(|p| p.line());
    let Some(columns) = columns(&header, |message| errors.push(origin(header_line), message))
    else {
        return Vec::new();
    };

    let mut rows = Vec::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line());
                let loc = |i: usize| Loc {
                    value: record[i].to_owned(),
                    line: line.and_then(|l| usize::try_from(l).ok()),
                };
                rows.push(Row {
                    group: loc(columns.group),
                    key: columns.key.filter(|&k| !record[k].is_empty()).map(&loc),
                    email: loc(columns.email),
                });
            }
            Err(e) => {
                let line = e.position().map(|p| p.line());
                errors.push(origin(line), csv_message(&e));
            }
        }
    }
    rows
}

/// Finds the columns in the header, reporting each problem through `report`.
fn columns(header: &::csv::StringRecord, mut report: impl FnMut(String)) -> Option<Columns> {
    let (mut group, mut email, mut key) = (None, None, None);
    let mut ok = true;
    for (i, name) in header.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}');
        let slot = match name.to_ascii_lowercase().as_str() {
            "group" => &mut group,
            "email" => &mut email,
            "key" => &mut key,
            _ => {
                report(format!(
                    "unknown column {name:?} in the CSV header; the columns are {KNOWN}"
                ));
                ok = false;
                continue;
            }
        };
        if slot.replace(i).is_some() {
            report(format!("column {name:?} appears twice in the CSV header"));
            ok = false;
        }
    }
    let (Some(group), Some(email)) = (group, email) else {
        let found: Vec<_> = header.iter().map(|h| format!("{h:?}")).collect();
        report(format!(
            "the CSV header must name the columns {KNOWN}; found {}",
            found.join(", ")
        ));
        return None;
    };
    ok.then_some(Columns { group, email, key })
}

/// A csv error as one line, without the position (which goes into the origin).
fn csv_message(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("this row has {len} columns but the header has {expected_len}"),
        _ => e.to_string(),
    }
}
