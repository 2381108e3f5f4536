//! `export` and `import`: whole account records as JSON lines, the backup and restore path.
//! Import checks every line, then dry-runs every batch, then writes: nothing is half-written.

use crate::error::{CtlError, LineProblem};
use crate::pages::each_page;
use qam_client::wire::{encode_request, ExportPage, ExportRecord, ImportInfo, MAX_REQUEST_LINE};
use qam_client::{Client, ClientError, Request, WireError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::Path;

/// Writes every record to `out`, one JSON object per line; returns how many.
fn write_records(client: &mut Client, out: &mut impl Write) -> Result<u64, CtlError> {
    let mut count = 0u64;
    each_page::<ExportPage>(
        client,
        |after, limit| Request::Export { after, limit },
        |records| {
            for record in records {
                serde_json::to_writer(&mut *out, &record)
                    .map_err(io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(CtlError::io("writing the export"))?;
                count += 1;
            }
            Ok(())
        },
    )?;
    Ok(count)
}

/// When standard output is a regular file (`qamctl export > backup`), makes it 0600 before a
/// hash is written, whatever the umask made it; a pipe or terminal is left as it is.
fn restrict_stdout_file() -> Result<(), CtlError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let what = || "making standard output mode 0600".to_owned();
    let file = std::fs::File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(CtlError::io(what()))?,
    );
    let regular = file
        .metadata()
        .map_err(CtlError::io(what()))?
        .file_type()
        .is_file();
    if regular {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(CtlError::io(what()))?;
    }
    Ok(())
}

/// `export`: to standard output (made 0600 when it is a file), or to `file` via a 0600
/// temporary file renamed into place once complete and synced (an interrupted export never
/// leaves a truncated backup).
pub fn export(client: &mut Client, file: Option<&Path>) -> Result<u64, CtlError> {
    let Some(path) = file else {
        restrict_stdout_file()?;
        let mut out = BufWriter::new(io::stdout().lock());
        let count = write_records(client, &mut out)?;
        out.flush().map_err(CtlError::io("writing the export"))?;
        return Ok(count);
    };
    let what = format!("writing {}", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600 and removes it if we fail before `persist`.
    let temp = tempfile::Builder::new()
        .prefix(".qamctl-export-")
        .tempfile_in(dir)
        .map_err(CtlError::io(what.clone()))?;
    let mut out = BufWriter::new(temp);
    let count = write_records(client, &mut out)?;
    let temp = out
        .into_inner()
        .map_err(|err| CtlError::io(what.clone())(err.into_error()))?;
    temp.as_file()
        .sync_all()
        .map_err(CtlError::io(what.clone()))?;
    temp.persist(path)
        .map_err(|err| CtlError::io(what)(err.error))?;
    Ok(count)
}

/// One record of the import file with the line it came from.
struct Line {
    /// The line's number in the file, from 1: problems and refused batches are reported by
    /// line.
    number: u64,
    /// The record the line holds, checked and then sent in an `import` batch.
    record: ExportRecord,
}

/// Bytes an `import` request takes around its records (the largest id, every flag `true`).
pub(crate) fn request_overhead() -> usize {
    let empty = Request::Import {
        records: Vec::new(),
        replace: true,
        dry_run: true,
        allow_weak: true,
        system_users: true,
    };
    encode_request(Some(u64::MAX), &empty).len() - 1
}

/// Splits `records` into consecutive ranges whose `import` request stays within the request
/// line limit (a record too long for any request gets a range of its own; qamd refuses it).
pub(crate) fn batches(records: &[ExportRecord], overhead: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut size = BatchSize::new(overhead);
    for (index, record) in records.iter().enumerate() {
        if size.starts_new(record) {
            ranges.push(start..index);
            start = index;
        }
    }
    if start < records.len() {
        ranges.push(start..records.len());
    }
    ranges
}

/// The size of the `import` request being filled, to know when a record must start the next.
struct BatchSize {
    /// What the request takes around its records.
    overhead: usize,
    /// The request's size with the records added so far.
    size: usize,
    /// Records added to the current request.
    count: usize,
}

impl BatchSize {
    fn new(overhead: usize) -> BatchSize {
        BatchSize {
            overhead,
            size: overhead,
            count: 0,
        }
    }

    /// Adds `record`; true when it does not fit, so it opens a new request (a record too long
    /// for any request still gets one of its own, which qamd refuses).
    fn starts_new(&mut self, record: &ExportRecord) -> bool {
        let cost = record_size(record);
        let full = self.count > 0 && self.size.saturating_add(cost) > MAX_REQUEST_LINE;
        if full {
            self.size = self.overhead;
            self.count = 0;
        }
        self.size = self.size.saturating_add(cost);
        self.count += 1;
        full
    }
}

/// Bytes a record adds to an `import` request (its JSON and a separating comma).
fn record_size(record: &ExportRecord) -> usize {
    serde_json::to_vec(record).map_or(usize::MAX, |json| json.len() + 1)
}

/// Reads the file's non-blank lines as records, numbered from 1; a line that does not parse
/// yields its problem instead.
fn read_lines(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Result<Line, LineProblem>, CtlError>>, CtlError> {
    let what = format!("reading {}", path.display());
    let file = File::open(path).map_err(CtlError::io(what.clone()))?;
    let lines = BufReader::new(file).split(b'\n').zip(1u64..);
    Ok(lines.filter_map(move |(bytes, number)| {
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(err) => return Some(Err(CtlError::io(what.clone())(err))),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(Ok(serde_json::from_slice::<ExportRecord>(&bytes)
            .map(|record| Line { number, record })
            .map_err(|err| LineProblem {
                line: number,
                reason: json_problem(&err),
            })))
    }))
}

/// serde_json's message without its position on the (single) line.
fn json_problem(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = text.split(" at line ").next().unwrap_or_default();
    format!("{text} (column {})", err.column())
}

/// What qamctl can check about a record on its own; the daemon's dry run checks the rest
/// (its username rules and the full PHC string).
fn check_record(record: &ExportRecord, overhead: usize) -> Result<(), String> {
    if record.name.is_empty() {
        return Err("`name` is empty".into());
    }
    if !record.hash.starts_with("$argon2id$") {
        return Err("`hash` is not an argon2id PHC string".into());
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if record.created.len() != 10 || time::Date::parse(&record.created, date).is_err() {
        return Err(format!(
            "`created` is `{}`, not a date YYYY-MM-DD",
            record.created
        ));
    }
    if overhead.saturating_add(record_size(record)) > MAX_REQUEST_LINE {
        return Err("the record is longer than one request may be".into());
    }
    Ok(())
}

/// First pass: every line parses, checks out and names a user no earlier line names.
fn validate(path: &Path, overhead: usize) -> Result<u64, CtlError> {
    let mut problems = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut count = 0u64;
    for line in read_lines(path)? {
        let line = match line? {
            Ok(line) => line,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        count += 1;
        let problem = match check_record(&line.record, overhead) {
            Err(reason) => Some(reason),
            Ok(()) => seen
                .insert(line.record.name.to_lowercase(), line.number)
                .map(|first| format!("`{}` already appears on line {first}", line.record.name)),
        };
        if let Some(reason) = problem {
            problems.push(LineProblem {
                line: line.number,
                reason,
            });
        }
    }
    if problems.is_empty() {
        Ok(count)
    } else {
        Err(CtlError::InvalidImport {
            file: path.to_owned(),
            problems,
        })
    }
}

/// Streams the file as batches whose `import` request stays within the request line limit.
/// `batch(records, line numbers)` is called for each; lines were validated by `validate`.
fn each_batch(
    path: &Path,
    overhead: usize,
    mut batch: impl FnMut(Vec<ExportRecord>, &[u64]) -> Result<(), CtlError>,
) -> Result<(), CtlError> {
    let mut records = Vec::new();
    let mut numbers = Vec::new();
    let mut size = BatchSize::new(overhead);
    for line in read_lines(path)? {
        let line = line?.map_err(|problem| {
            CtlError::Protocol(format!(
                "{} changed during the import (line {}: {})",
                path.display(),
                problem.line,
                problem.reason
            ))
        })?;
        if size.starts_new(&line.record) {
            batch(std::mem::take(&mut records), &numbers)?;
            numbers.clear();
        }
        records.push(line.record);
        numbers.push(line.number);
    }
    if !records.is_empty() {
        batch(records, &numbers)?;
    }
    Ok(())
}

/// Where in the file a refused batch is: the line of the record the daemon names by index
/// ("record 3"), else the batch's line range.
fn place(path: &Path, err: &ClientError, numbers: &[u64]) -> String {
    let named = match err {
        ClientError::Server(wire) => record_index(&wire.message).and_then(|i| numbers.get(i)),
        _ => None,
    };
    match (named, numbers.first(), numbers.last()) {
        (Some(line), _, _) => format!("line {line} of {}", path.display()),
        (None, Some(first), Some(last)) => {
            format!("in lines {first}–{last} of {}", path.display())
        }
        _ => path.display().to_string(),
    }
}

/// The index in a daemon message such as "record 3: invalid hash" or "records[3]".
fn record_index(message: &str) -> Option<usize> {
    let at = message.find("record")?;
    let digits: String = message[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `import`: validate every line, dry-run every batch, then write the batches.
pub fn import(client: &mut Client, path: &Path, replace: bool) -> Result<ImportInfo, CtlError> {
    let overhead = request_overhead();
    validate(path, overhead)?;
    let call = |client: &mut Client, records, dry_run| {
        client.call::<ImportInfo>(&Request::Import {
            records,
            replace,
            dry_run,
            allow_weak: false,
            system_users: false,
        })
    };
    each_batch(path, overhead, |records, numbers| {
        let refused =
            call(client, records, true).and_then(|info| match info.refused.into_iter().next() {
                None => Ok(()),
                Some(first) => Err(ClientError::Server(WireError::new(
                    first.code,
                    format!("record {}: {}", first.index, first.message),
                ))),
            });
        refused.map_err(|source| CtlError::ImportRefused {
            place: place(path, &source, numbers),
            source,
        })
    })?;
    let mut total = ImportInfo {
        imported: 0,
        replaced: 0,
        schemes: Default::default(),
        refused: Vec::new(),
    };
    each_batch(path, overhead, |records, numbers| {
        let done = call(client, records, false).map_err(|source| CtlError::ImportStopped {
            place: place(path, &source, numbers),
            source,
            written: total.imported,
        })?;
        total.imported += done.imported;
        total.replaced += done.replaced;
        Ok(())
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ExportRecord {
        ExportRecord {
            name: name.into(),
            hash: "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            created: "2026-11-25".into(),
            locked: false,
            uid: None,
            origin: None,
            password: None,
        }
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn line_of(record: &ExportRecord) -> String {
        serde_json::to_string(record).unwrap() + "\n"
    }

    #[test]
    fn the_overhead_covers_an_empty_request() {
        let overhead = request_overhead();
        let replace = Request::Import {
            records: vec![],
            replace: true,
            dry_run: true,
            allow_weak: true,
            system_users: true,
        };
        assert!(encode_request(Some(1), &replace).len() - 1 <= overhead);
    }

    #[test]
    fn batches_stay_under_the_request_limit_and_keep_every_record() {
        let text: String = (0..2000)
            .map(|n| line_of(&record(&format!("u{n:05}"))))
            .collect();
        let file = file_with(&text);
        let overhead = request_overhead();
        assert_eq!(validate(file.path(), overhead).unwrap(), 2000);
        let mut seen = 0;
        let mut batches = 0;
        each_batch(file.path(), overhead, |records, numbers| {
            let request = Request::Import {
                records: records.clone(),
                replace: false,
                dry_run: false,
                allow_weak: false,
                system_users: false,
            };
            assert!(encode_request(Some(u64::MAX), &request).len() - 1 <= MAX_REQUEST_LINE);
            assert_eq!(records.len(), numbers.len());
            assert_eq!(numbers[0], seen + 1);
            seen += records.len() as u64;
            batches += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2000);
        assert!(batches > 1, "2000 records need several batches");
    }

    #[test]
    fn every_invalid_line_is_reported_with_its_number() {
        let mut bad_date = record("carol");
        bad_date.created = "2026-13-01".into();
        let mut bad_hash = record("dave");
        bad_hash.hash = "$2y$10$bcrypt".into();
        let text = [
            line_of(&record("alice")),
            "\n".into(),
            "{\"name\":\"bob\"}\n".into(),
            line_of(&bad_date),
            line_of(&bad_hash),
            line_of(&record("Alice")),
            "not json\n".into(),
        ]
        .concat();
        let file = file_with(&text);
        match validate(file.path(), request_overhead()) {
            Err(CtlError::InvalidImport { problems, .. }) => {
                let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
                assert_eq!(lines, vec![3, 4, 5, 6, 7], "{problems:?}");
                assert!(problems[0].reason.contains("missing field"), "{problems:?}");
                assert!(problems[3].reason.contains("line 1"), "{problems:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let file = file_with("{\"name\":\"a\",\"hash\":\"$argon2id$x\",\"created\":\"2026-01-01\",\"locked\":false,\"email\":\"a@b\"}\n");
        assert!(matches!(
            validate(file.path(), request_overhead()),
            Err(CtlError::InvalidImport { .. })
        ));
    }

    #[test]
    fn daemon_record_indexes_map_to_lines() {
        assert_eq!(record_index("record 3: invalid hash"), Some(3));
        assert_eq!(record_index("records[12] has a bad date"), Some(12));
        assert_eq!(record_index("name exists"), None);
        let err = ClientError::Server(qam_client::WireError::new(
            qam_client::ErrorCode::BadRequest,
            "record 1: bad",
        ));
        assert_eq!(place(Path::new("f"), &err, &[4, 9]), "line 9 of f");
        let err = ClientError::Closed;
        assert_eq!(place(Path::new("f"), &err, &[4, 9]), "in lines 4–9 of f");
    }
}
