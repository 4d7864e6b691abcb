//! The echo's latency mode (`Parameters\RoundTrips`, [`crate::latency`]) against the host model:
//! N round trips of the message, one result line with p50 and p99, nothing allocated per round
//! trip (the histogram and the two buffers once), `RoundTrips` with `Bytes` refused.

use wsk_client::sys::REG_DWORD;
use wsk_host_model::{Event, ProviderConfig, Session, Status};

use super::set_parameters;
use crate::DriverEntry;

/// A session whose `Parameters` say: the model's echo peer, a 1-byte message, `RoundTrips`.
fn session_with(round_trips: u32) -> Session {
    let s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    set_parameters(&s, "127.0.0.1", 7, "x");
    s.set_parameter(
        "Parameters",
        "RoundTrips",
        REG_DWORD,
        &round_trips.to_le_bytes(),
    );
    s
}

/// The driver's result lines.
fn echo_lines(s: &Session) -> Vec<String> {
    s.log()
        .into_iter()
        .filter(|line| line.starts_with("wsk_echo: echo "))
        .collect()
}

/// The session's successful pool allocations.
fn allocations(s: &Session) -> usize {
    s.events()
        .iter()
        .filter(|e| matches!(e, Event::Allocate { ok: true, .. }))
        .count()
}

/// `round_trips` round trips: the result line, the sends, and the pool allocations.
fn run(round_trips: u32) -> (String, usize, usize) {
    let mut s = session_with(round_trips);
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    let lines = echo_lines(&s);
    assert_eq!(lines.len(), 1, "{:#?}", s.log());
    let sends = s
        .events()
        .iter()
        .filter(|e| matches!(e, Event::WskSend { bytes: 1 }))
        .count();
    let allocated = allocations(&s);
    s.driver_unload();
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_echo: unloaded, live pool allocations: 0")
    );
    (lines[0].clone(), sends, allocated)
}

#[test]
fn round_trips_are_timed_into_one_line_with_nothing_allocated_per_round_trip() {
    let (line, sends, allocated) = run(50);
    let rest = line
        .strip_prefix("wsk_echo: echo ok, 50 round trips, p50 ")
        .unwrap_or_else(|| panic!("{line}"));
    let (p50, p99) = rest
        .strip_suffix(" us")
        .and_then(|r| r.split_once(" us, p99 "))
        .unwrap_or_else(|| panic!("{line}"));
    let (p50, p99): (u32, u32) = (p50.parse().unwrap(), p99.parse().unwrap());
    assert!(p50 <= p99 && p99 <= 10_000, "{line}");
    assert_eq!(sends, 50, "one 1-byte send per round trip");
    // Twice the round trips: not one pool block more.
    let (_, _, allocated_100) = run(100);
    assert_eq!(allocated_100, allocated, "pool allocations per round trip");
}

#[test]
fn round_trips_with_bytes_are_refused() {
    let mut s = session_with(10);
    s.set_parameter("Parameters", "Bytes", REG_DWORD, &1024u32.to_le_bytes());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(
        s.log()
            .iter()
            .any(|l| l == "wsk_echo: parameters: RoundTrips malformed: no echo"),
        "{:#?}",
        s.log()
    );
    assert!(echo_lines(&s).is_empty());
    s.driver_unload();
}
