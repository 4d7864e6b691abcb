//! The echo's bulk mode, `Parameters\Bytes` = N: instead of one message, N bytes — `Message`
//! repeated, cut at N — go through the echo server in chunks of at most [`CHUNK`] bytes, every
//! byte that comes back checked against what was sent there, and one result line says how long
//! it took: `echo ok, N bytes in M ms` (or `echo failed: <step> 0x<NTSTATUS>`, as for one
//! message).
//!
//! Two chunks are in flight: the send of chunk k+1 goes out while chunk k is still coming back
//! (a receive is always pending beside it, [`wsk_client::task::join`]); the next send waits until
//! at most one chunk is unanswered. So the driver holds two chunk buffers (one to send, one to
//! receive into) and nothing else, whatever N. Every send and receive keeps the exchange's 5 s
//! step; the stop (a detach or the unload) cancels the task, so a stop during a long transfer ends
//! it at once (`echo failed: send|receive 0xC0000120`), and the socket is closed as for a failed
//! exchange.
//!
//! The time is the transfer's, first send to last byte checked, read from
//! `KeQueryPerformanceCounter`, which is looked up by name (never imported: Wine 8 exports it only
//! from hal.dll); where it cannot be found the result line says `(no clock)` instead.
//!
//! IRQL: [`stream`] at `PASSIVE_LEVEL` (in the connection's task); the pure helpers at any IRQL.

use core::num::NonZeroU32;

use wsk_client::NtError;
use wsk_client::buffer::Buffer;
use wsk_client::socket::Socket;
use wsk_client::task::{self, OptionFuture};
use wsk_client::time::PerformanceCounter as Clock;

use crate::WskEcho;
use crate::connection::{Failure, transfer};

/// The most bytes one send (and one receive) moves: 64 KiB.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The length of every chunk (the last may be shorter): as many whole messages as fit in
/// [`CHUNK`], or all of `total` when that is less. So each chunk starts at the message's first
/// byte, and the stream is the first chunk's bytes over and over.
///
/// IRQL: any.
#[must_use]
pub(crate) fn chunk_len(message_len: usize, total: usize) -> usize {
    let message_len = message_len.clamp(1, CHUNK);
    (CHUNK / message_len * message_len).min(total)
}

/// Fills `out` with `message` repeated (cut where `out` ends).
///
/// IRQL: any.
pub(crate) fn fill(out: &mut [u8], message: &[u8]) {
    for (to, from) in out.iter_mut().zip(message.iter().cycle()) {
        *to = *from;
    }
}

/// Whether `received`, which arrived at byte `at` of the stream, is what was sent there: the
/// stream is `chunk` sent again and again (see [`chunk_len`]), and what arrives at once may span
/// the end of one chunk and the start of the next (two chunks are in flight).
///
/// IRQL: any.
#[must_use]
pub(crate) fn matches(chunk: &[u8], at: u64, received: &[u8]) -> bool {
    let Some(mut start) = u64::try_from(chunk.len())
        .ok()
        .and_then(|len| at.checked_rem(len))
        .and_then(|start| usize::try_from(start).ok())
    else {
        return received.is_empty();
    };
    let mut rest = received;
    while !rest.is_empty() {
        let Some(expected) = chunk.get(start..) else {
            return false;
        };
        let (here, after) = rest.split_at(expected.len().min(rest.len()));
        if expected.get(..here.len()) != Some(here) {
            return false;
        }
        rest = after;
        start = 0;
    }
    true
}

/// `ticks` of a counter running at `frequency` ticks per second, in units of `1 / per_second`
/// s (1000: milliseconds; 1000000: microseconds), with no overflow for any tick count and any
/// frequency up to 2^44 per second.
///
/// IRQL: any.
#[must_use]
pub(crate) fn ticks_to(ticks: u64, frequency: u64, per_second: u64) -> u64 {
    let Some(whole) = ticks.checked_div(frequency) else {
        return 0;
    };
    let rest = ticks.checked_rem(frequency).unwrap_or(0);
    whole
        .saturating_mul(per_second)
        .saturating_add(rest.saturating_mul(per_second) / frequency)
}

/// Streams `total` bytes of `message` repeated through the connected `socket` and back (see the
/// module); logs the one result line when it succeeded (a failure is the caller's to log).
///
/// IRQL: `PASSIVE_LEVEL` (in the connection's task).
pub(crate) async fn stream(
    socket: &Socket<WskEcho>,
    message: &[u8],
    total: NonZeroU32,
) -> Result<(), Failure> {
    let total_bytes = u64::from(total.get());
    let chunk = chunk_len(message.len(), usize::try_from(total.get()).unwrap_or(CHUNK));
    let mut out = Buffer::new::<WskEcho>(chunk).map_err(Failure::at(c"buffer"))?;
    fill(out.as_mut_slice(), message);
    let mut out = Some(out);
    let mut back = Some(Buffer::new::<WskEcho>(chunk).map_err(Failure::at(c"buffer"))?);
    let clock = Clock::find();
    let started = clock.as_ref().map(Clock::now);
    // Bytes sent, and bytes back and checked.
    let (mut sent, mut received) = (0u64, 0u64);
    while received < total_bytes {
        // A receive while bytes are unanswered; beside it, the next chunk's send while at most one
        // chunk is unanswered: two chunks in flight.
        let next = (sent < total_bytes && sent - received <= chunk as u64)
            .then(|| usize::try_from(total_bytes - sent).map_or(chunk, |left| left.min(chunk)));
        let n = next.unwrap_or(0);
        let sending_now = next
            .and_then(|_| out.take())
            .map(|buffer| transfer(c"send", move || socket.send(buffer, n)));
        let receiving_now = if sent > received { back.take() } else { None }
            .map(|buffer| transfer(c"receive", move || socket.receive(buffer)));
        let (sending, receiving) = task::join(
            OptionFuture::from(sending_now),
            OptionFuture::from(receiving_now),
        )
        .await;
        if let Some(sending) = sending {
            let (done, buffer) = sending?;
            if done != n {
                return Err(Failure::new(c"send", NtError::UNSUCCESSFUL));
            }
            out = Some(buffer);
            sent += n as u64;
        }
        let Some(receiving) = receiving else {
            continue;
        };
        let (n, buffer) = receiving?;
        let arrived = buffer.as_slice().get(..n).unwrap_or(&[]);
        if n == 0 {
            // The peer closed (or reset: Wine reports a reset as a 0-byte receive).
            return Err(Failure::new(c"receive", NtError::CONNECTION_ABORTED));
        }
        // More than was sent, or other bytes than were sent there.
        if received + n as u64 > sent || !matches(chunk_of(out.as_ref()), received, arrived) {
            return Err(Failure::new(c"compare", NtError::UNSUCCESSFUL));
        }
        received += n as u64;
        back = Some(buffer);
    }
    log_ok(total.get(), clock.as_ref().zip(started));
    Ok(())
}

/// The chunk's bytes (the out buffer's first chunk: every chunk is the same).
fn chunk_of(out: Option<&Buffer>) -> &[u8] {
    out.map_or(&[], Buffer::as_slice)
}

/// The result line of a transfer that succeeded.
fn log_ok(bytes: u32, clock: Option<(&Clock, u64)>) {
    match clock {
        Some((clock, started)) => {
            let ticks = clock.now().saturating_sub(started);
            let ms = u32::try_from(ticks_to(ticks, clock.frequency(), 1000)).unwrap_or(u32::MAX);
            wsk_client::info!(WskEcho, "echo ok, %u bytes in %u ms", bytes, ms);
        }
        None => {
            wsk_client::info!(WskEcho, "echo ok, %u bytes (no clock)", bytes);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::{CHUNK, chunk_len, fill, matches, ticks_to};

    #[test]
    fn chunks_hold_whole_messages() {
        assert_eq!(chunk_len(11, 16 << 20), CHUNK / 11 * 11);
        assert_eq!(chunk_len(512, 16 << 20), CHUNK);
        assert_eq!(chunk_len(1, 16 << 20), CHUNK);
        assert_eq!(chunk_len(11, 100), 100, "less than a chunk in all");
        assert_eq!(chunk_len(0, 100), 100, "no message: no division by zero");
    }

    #[test]
    fn the_stream_is_the_message_repeated_and_each_byte_is_checked() {
        let message = b"hello, echo";
        let mut chunk = vec![0u8; chunk_len(message.len(), 1 << 20)];
        fill(&mut chunk, message);
        // The stream: whole chunks, the last one cut.
        let total = 1_000_003usize;
        let stream: Vec<u8> = chunk.iter().copied().cycle().take(total).collect();
        let expected: Vec<u8> = message.iter().copied().cycle().take(total).collect();
        assert!(
            stream == expected,
            "chunks restart at the message's first byte"
        );
        // Arrivals of any size, each inside one chunk, match; any byte flipped does not.
        let mut at = 0;
        for (i, piece) in stream.chunks(chunk.len()).enumerate() {
            for part in piece.chunks(1 + i * 997 % 5000) {
                assert!(matches(&chunk, at as u64, part), "at {at}");
                let mut wrong = part.to_vec();
                let flip = wrong.len() / 2;
                wrong[flip] ^= 1;
                assert!(!matches(&chunk, at as u64, &wrong), "flipped at {at}");
                at += part.len();
            }
        }
        assert!(!matches(&chunk, 0, &chunk[1..3]), "shifted by one");
        // Two chunks in flight: one arrival may span the end of a chunk and the next one's start.
        let n = chunk.len();
        let across: Vec<u8> = chunk[n - 3..].iter().chain(&chunk[..5]).copied().collect();
        assert!(
            matches(&chunk, (3 * n - 3) as u64, &across),
            "across a chunk's end"
        );
        assert!(
            !matches(&chunk, (3 * n - 2) as u64, &across),
            "across, shifted"
        );
        assert!(
            !matches(&chunk, 5, &vec![b'x'; chunk.len()]),
            "past the chunk"
        );
        assert!(!matches(&[], 0, b"x") && matches(&[], 0, b""));
    }

    #[test]
    fn milliseconds_and_microseconds_from_ticks() {
        assert_eq!(ticks_to(10_000_000, 10_000_000, 1000), 1000);
        assert_eq!(ticks_to(12_345, 10_000_000, 1000), 1);
        assert_eq!(ticks_to(3_579_545 * 3 + 3_579, 3_579_545, 1000), 3000);
        assert_eq!(
            ticks_to(u64::MAX, 10_000_000, 1000),
            u64::MAX / 10_000_000 * 1000 + 955
        );
        assert_eq!(ticks_to(12_345, 10_000_000, 1_000_000), 1234);
        assert_eq!(ticks_to(3_579_545 + 358, 3_579_545, 1_000_000), 1_000_100);
        assert_eq!(
            ticks_to(u64::MAX, 10_000_000, 1_000_000),
            u64::MAX / 10_000_000 * 1_000_000 + 955_161
        );
        assert_eq!(ticks_to(5, 0, 1000), 0, "no frequency: no division by zero");
    }
}
