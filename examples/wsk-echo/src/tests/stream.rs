//! The echo's bulk mode (`Parameters\Bytes`, [`crate::stream`]) against the host model: the bytes
//! go in bounded chunks that add up to `Bytes`, one result line, a malformed `Bytes` refused by
//! name, and a stop during a long transfer ending it within a step. Every failure of a bulk
//! exchange's calls, in turn: the failure matrix's bulk scenario ([`super::matrix`]).

use wsk_client::sys::{REG_DWORD, REG_SZ};
use wsk_host_model::{Event, ProviderConfig, Session, Status, reg_sz};

use super::set_parameters;
use crate::DriverEntry;
use crate::stream::{CHUNK, chunk_len};

const MESSAGE: &str = "hello, echo";

/// A session whose `Parameters` say: the model's echo peer, `MESSAGE`, and `Bytes` as given.
fn session_with(bytes: Option<(u32, &[u8])>, config: ProviderConfig) -> Session {
    let s = super::session();
    s.register_provider(config);
    set_parameters(&s, "127.0.0.1", 7, MESSAGE);
    if let Some((kind, data)) = bytes {
        s.set_parameter("Parameters", "Bytes", kind, data);
    }
    s
}

fn echo_lines(s: &Session) -> Vec<String> {
    s.log()
        .into_iter()
        .filter(|line| line.starts_with("wsk_echo: echo "))
        .collect()
}

fn sends(s: &Session) -> Vec<usize> {
    s.events()
        .iter()
        .filter_map(|e| match e {
            Event::WskSend { bytes } => Some(*bytes),
            _ => None,
        })
        .collect()
}

/// Whether the driver asked for `KeQueryPerformanceCounter` and the model had it.
fn clock_lookup(s: &Session) -> Option<bool> {
    s.events().iter().find_map(|e| match e {
        Event::MmGetSystemRoutineAddress { name, found } if name == "KeQueryPerformanceCounter" => {
            Some(*found)
        }
        _ => None,
    })
}

/// The result line of a transfer of `total` bytes: with the time when the clock was found.
fn is_ok_line(line: &str, total: u32, clock: bool) -> bool {
    let head = format!("wsk_echo: echo ok, {total} bytes");
    let Some(rest) = line.strip_prefix(&head) else {
        return false;
    };
    if clock {
        rest.strip_prefix(" in ")
            .and_then(|r| r.strip_suffix(" ms"))
            .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
    } else {
        rest == " (no clock)"
    }
}

#[test]
fn bytes_stream_in_bounded_chunks_that_add_up_with_one_result_line() {
    let total: u32 = 1_000_003; // not a multiple of the message nor of the chunk
    let mut s = session_with(
        Some((REG_DWORD, &total.to_le_bytes())),
        ProviderConfig::default_wsk(),
    );
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    let clock = clock_lookup(&s).expect("the clock is looked up for a transfer");
    let lines = echo_lines(&s);
    assert!(
        lines.len() == 1 && is_ok_line(&lines[0], total, clock),
        "{:#?}",
        s.log()
    );
    // Every send but the last is one whole chunk of whole messages (at most 64 KiB); the sends
    // add up to Bytes; the buffers are two chunks, whatever Bytes.
    let chunk = chunk_len(MESSAGE.len(), total as usize);
    assert!(chunk <= CHUNK && chunk.is_multiple_of(MESSAGE.len()) && chunk > CHUNK - MESSAGE.len());
    let sends = sends(&s);
    assert_eq!(sends.len(), (total as usize).div_ceil(chunk), "{sends:?}");
    assert!(
        sends[..sends.len() - 1].iter().all(|n| *n == chunk),
        "{sends:?}"
    );
    assert_eq!(sends.iter().sum::<usize>(), total as usize);
    // Two chunks in flight: the second chunk's send goes out beside the first receive, before a
    // second receive was posted (lock-step would post receives until the first chunk is back).
    let order: Vec<&str> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::WskSend { .. } => Some("send"),
            Event::WskReceive => Some("receive"),
            _ => None,
        })
        .take(3)
        .collect();
    assert_eq!(
        order,
        ["send", "send", "receive"],
        "the send of chunk 2 overlaps chunk 1's receive"
    );
    let biggest = s
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Allocate { size, ok: true, .. } => Some(*size),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(biggest < CHUNK + 4096, "a pool block of {biggest} bytes");
    // The connection stays open until the stop, as for one message.
    assert_eq!(s.open_sockets(), 1);
    s.driver_unload();
    assert_eq!(s.open_sockets(), 0);
    assert!(s.events().contains(&Event::WskDisconnect));
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_echo: unloaded, live pool allocations: 0")
    );
    s.check_clean();
}

#[test]
fn a_transfer_shorter_than_the_message_sends_a_cut_message() {
    let mut s = session_with(
        Some((REG_DWORD, &5u32.to_le_bytes())),
        ProviderConfig::default_wsk(),
    );
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    let clock = clock_lookup(&s).unwrap();
    assert!(is_ok_line(&echo_lines(&s)[0], 5, clock), "{:#?}", s.log());
    assert_eq!(sends(&s), [5]);
    s.driver_unload();
    s.check_clean();
}

#[test]
fn without_bytes_one_message_is_echoed_as_before() {
    let mut s = session_with(None, ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert_eq!(echo_lines(&s), ["wsk_echo: echo ok, 11 bytes"]);
    assert_eq!(sends(&s), [MESSAGE.len()]);
    assert_eq!(
        clock_lookup(&s),
        None,
        "no clock without a transfer to time"
    );
    s.driver_unload();
    s.check_clean();
}

#[test]
fn a_malformed_bytes_is_logged_by_name_and_nothing_is_sent() {
    let zero = 0u32.to_le_bytes();
    let text = reg_sz("16777216");
    let short = [0u8, 1];
    let long = [0u8, 0, 1, 0, 0, 0, 0, 0];
    for (kind, data) in [
        (REG_DWORD, &zero[..]),
        (REG_SZ, &text[..]),
        (REG_DWORD, &short[..]),
        (REG_DWORD, &long[..]),
    ] {
        let mut s = session_with(Some((kind, data)), ProviderConfig::default_wsk());
        assert_eq!(
            s.driver_entry(DriverEntry),
            Status::SUCCESS,
            "it loads anyway"
        );
        s.wait_work_items();
        assert!(
            s.log()
                .iter()
                .any(|l| l == "wsk_echo: parameters: Bytes malformed: no echo"),
            "{kind} {data:?}: {:#?}",
            s.log()
        );
        assert!(echo_lines(&s).is_empty(), "{:#?}", s.log());
        assert!(
            !s.events()
                .iter()
                .any(|e| matches!(e, Event::WskSocket { .. })),
            "no connection"
        );
        s.driver_unload();
        assert_eq!(
            s.log().last().map(String::as_str),
            Some("wsk_echo: unloaded, live pool allocations: 0")
        );
        s.check_clean();
    }
}

#[test]
fn a_stop_during_a_long_transfer_ends_it_within_a_step() {
    // 4 GiB: far more than the test lets it move. The unload begins after a few chunks; the
    // transfer sees the stop before its next step, logs it, closes its socket, and the unload
    // completes. Each completion routine is preempted right after it wakes its waiter, so the
    // stop most likely comes while one is: its request must be freed already all the same.
    let mut s = session_with(
        Some((REG_DWORD, &u32::MAX.to_le_bytes())),
        ProviderConfig::default_wsk(),
    );
    s.pause_routines_after_set_event(std::time::Duration::from_millis(50));
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    let moving = (0..2000).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        sends(&s).len() >= 4
    });
    assert!(moving, "{:#?}", s.log());
    let started = std::time::Instant::now();
    s.driver_unload();
    let took = started.elapsed();
    let lines = echo_lines(&s);
    assert!(
        lines.len() == 1
            && (lines[0] == "wsk_echo: echo failed: send 0xC0000120"
                || lines[0] == "wsk_echo: echo failed: receive 0xC0000120"),
        "{:#?}",
        s.log()
    );
    let sent: usize = sends(&s).iter().sum();
    assert!(sent < (u32::MAX as usize) / 1000, "{sent} bytes sent");
    assert_eq!(s.open_sockets(), 0);
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_echo: unloaded, live pool allocations: 0"),
        "{:#?}",
        s.events()
    );
    s.check_clean();
    println!("stop during a 4 GiB transfer: {sent} bytes sent, unload took {took:?}");
}
