//! The failure matrix (`tests/failure-matrix.txt`): every call the drivers make that can fail,
//! how it fails and with which documented statuses. The Speakeasy half reads the same file.

use crate::Status;

/// How a call fails (the file's `<how>` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Returns NULL; the status is what the driver is expected to report.
    Null,
    /// Returns the status.
    Return,
    /// A WSK function completes its IRP with the status.
    Irp,
}

/// One call of the matrix.
#[derive(Clone, Debug)]
pub struct Row {
    /// The C name.
    pub call: String,
    /// How it fails.
    pub how: How,
    /// Its failure statuses: (C name, value).
    pub statuses: Vec<(String, Status)>,
}

/// The matrix's text.
pub const TEXT: &str = include_str!("../../../tests/failure-matrix.txt");

/// The rows of [`TEXT`]; panics on a malformed line (a test reads it).
#[must_use]
pub fn rows() -> Vec<Row> {
    parse(TEXT).unwrap_or_else(|error| panic!("tests/failure-matrix.txt: {error}"))
}

/// The lines of one of the tests' tables (`tests/*.txt`): each line with its comment (`#` on)
/// removed, blank ones skipped, with a function that names the line in an error.
pub(crate) fn table_lines(text: &str) -> impl Iterator<Item = (&str, impl Fn(&str) -> String)> {
    text.lines().enumerate().filter_map(|(number, line)| {
        let line = line.split('#').next().unwrap_or_default().trim();
        (!line.is_empty()).then_some((line, move |what: &str| {
            format!("line {}: {what}: {line}", number + 1)
        }))
    })
}

/// Parses the matrix's format.
///
/// # Errors
/// A line that is not `<Call> <null|return|irp> <NAME>=<0xHEX>...`, or a status that is a success.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (line, at) in table_lines(text) {
        let mut words = line.split_whitespace();
        let call = words.next().ok_or_else(|| at("no call"))?.to_string();
        let how = match words.next() {
            Some("null") => How::Null,
            Some("return") => How::Return,
            Some("irp") => How::Irp,
            _ => return Err(at("no <how> (null, return, irp)")),
        };
        let mut statuses = Vec::new();
        for word in words {
            let (name, hex) = word.split_once("=0x").ok_or_else(|| at("not NAME=0xHEX"))?;
            let value = u32::from_str_radix(hex, 16).map_err(|_| at("bad hex"))?;
            let status = Status::from_raw(value.cast_signed());
            if status.raw() >= 0 {
                return Err(at("a success status is not a failure"));
            }
            statuses.push((name.to_string(), status));
        }
        if statuses.is_empty() {
            return Err(at("no status"));
        }
        if rows.iter().any(|r: &Row| r.call == call) {
            return Err(at("the call is listed twice"));
        }
        rows.push(Row {
            call,
            how,
            statuses,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::{How, parse, rows};

    #[test]
    fn the_matrix_parses_and_lists_the_drivers_calls() {
        let rows = rows();
        for call in ["IoAllocateIrp", "NmrClientAttachProvider", "WskReceive"] {
            assert!(rows.iter().any(|r| r.call == call), "{call} missing");
        }
        let receive = rows.iter().find(|r| r.call == "WskReceive").unwrap();
        assert_eq!(receive.how, How::Irp);
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("X maybe STATUS_A=0xC0000001").is_err());
        assert!(parse("X null").is_err());
        assert!(parse("X null STATUS_SUCCESS=0x00000000").is_err());
        assert!(parse("X null STATUS_A=C0000001").is_err());
        assert!(parse("X null A=0xC0000001\nX irp A=0xC0000001").is_err());
        assert_eq!(parse("# only a comment\n\n").unwrap().len(), 0);
    }
}
