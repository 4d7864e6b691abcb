//! The echo's latency mode, `Parameters\RoundTrips` = N (issue 20): N round trips of the whole
//! `Message`, one after the other — send it, receive until all of it is back, check it — each
//! timed from its send to its last byte checked into a histogram of 1 µs buckets (0 to 9999 µs,
//! and one bucket for 10 ms and more); then one result line gives the median and the 99th
//! percentile: `echo ok, N round trips, p50 A us, p99 B us` (or `echo failed: <step>
//! 0x<NTSTATUS>`, as for one message). The C comparator (`baseline/wsk_echo_baseline.c`) logs
//! the same line from the same histogram, so `cargo xtask echo-bench --round-trips N` compares
//! like with like.
//!
//! The histogram is one zeroed buffer of the library's (40 KiB: never on a kernel stack), made
//! before the first round trip; nothing else is allocated per round trip (the socket keeps its
//! send and receive requests).
//!
//! IRQL: [`round_trips`] at `PASSIVE_LEVEL` (in the connection's task); the pure helpers at any
//! IRQL.

use core::num::NonZeroU32;

use wsk_client::buffer::Buffer;
use wsk_client::socket::Socket;
use wsk_client::time::PerformanceCounter as Clock;

use crate::WskEcho;
use crate::connection::{Failure, round_trip};
use crate::stream::ticks_to;

/// Buckets of 1 µs: 0 to 9999 µs, then the overflow (10 ms and more, read as 10000).
pub(crate) const BUCKETS: usize = 10_001;

/// Counts round trips by their duration in µs, in `counts` (`BUCKETS` little-endian `u32`s).
pub(crate) struct Histogram<'c> {
    counts: &'c mut [u8],
}

impl<'c> Histogram<'c> {
    /// Over `counts`, zeroed, of at least `4 * BUCKETS` bytes.
    pub(crate) fn over(counts: &'c mut [u8]) -> Self {
        Self { counts }
    }

    /// Counts one round trip of `us` µs (the overflow bucket from 10 ms on).
    ///
    /// IRQL: any.
    pub(crate) fn add(&mut self, us: u64) {
        let bucket = usize::try_from(us).map_or(BUCKETS - 1, |us| us.min(BUCKETS - 1));
        if let Some(slot) = self
            .counts
            .get_mut(bucket * 4..bucket * 4 + 4)
            .and_then(|slot| <&mut [u8; 4]>::try_from(slot).ok())
        {
            *slot = u32::from_le_bytes(*slot).saturating_add(1).to_le_bytes();
        }
    }

    /// The `percent`-th percentile of `count` round trips: the smallest bucket value `v` such
    /// that the round trips of at most `v` µs are at least `ceil(count * percent / 100)`; the
    /// overflow bucket reads 10000.
    ///
    /// IRQL: any.
    pub(crate) fn percentile(&self, count: u32, percent: u32) -> u32 {
        let need = (u64::from(count) * u64::from(percent)).div_ceil(100);
        let mut seen = 0u64;
        for (value, slot) in (0u32..).zip(self.counts.chunks_exact(4).take(BUCKETS - 1)) {
            seen += <[u8; 4]>::try_from(slot).map_or(0, |slot| u64::from(u32::from_le_bytes(slot)));
            if seen >= need {
                return value;
            }
        }
        #[allow(clippy::cast_possible_truncation)] // 10000
        let overflow = (BUCKETS - 1) as u32;
        overflow
    }
}

/// `count` round trips of `message` through the connected `socket` (see the module); logs the one
/// result line when they all succeeded (a failure is the caller's to log).
///
/// IRQL: `PASSIVE_LEVEL` (in the connection's task).
pub(crate) async fn round_trips(
    socket: &Socket<WskEcho>,
    message: &[u8],
    count: NonZeroU32,
) -> Result<(), Failure> {
    let mut out = Buffer::new::<WskEcho>(message.len()).map_err(Failure::at(c"buffer"))?;
    crate::stream::fill(out.as_mut_slice(), message);
    let mut back = Buffer::new::<WskEcho>(message.len()).map_err(Failure::at(c"buffer"))?;
    let mut counts = Buffer::new::<WskEcho>(4 * BUCKETS).map_err(Failure::at(c"buffer"))?;
    let mut histogram = Histogram::over(counts.as_mut_slice());
    let clock = Clock::find();
    for _ in 0..count.get() {
        let started = clock.as_ref().map(Clock::now);
        (out, back) = round_trip(socket, out, back, message.len()).await?;
        if let (Some(clock), Some(started)) = (clock.as_ref(), started) {
            let ticks = clock.now().saturating_sub(started);
            histogram.add(ticks_to(ticks, clock.frequency(), 1_000_000));
        }
    }
    let n = count.get();
    if clock.is_some() {
        let (p50, p99) = (histogram.percentile(n, 50), histogram.percentile(n, 99));
        wsk_client::info!(
            WskEcho,
            "echo ok, %u round trips, p50 %u us, p99 %u us",
            n,
            p50,
            p99
        );
    } else {
        wsk_client::info!(WskEcho, "echo ok, %u round trips (no clock)", n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{BUCKETS, Histogram};

    /// The percentiles `(count, percent)` of a histogram of `durations` (µs).
    fn percentiles(durations: &[u64], queries: &[(u32, u32)]) -> Vec<u32> {
        let mut counts = vec![0u8; 4 * BUCKETS];
        let mut histogram = Histogram::over(&mut counts);
        for us in durations {
            histogram.add(*us);
        }
        queries
            .iter()
            .map(|(count, percent)| histogram.percentile(*count, *percent))
            .collect()
    }

    #[test]
    fn percentiles_are_the_smallest_bucket_holding_enough_round_trips() {
        // 100 round trips: 1..=100 µs.
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            percentiles(&hundred, &[(100, 50), (100, 99), (100, 100)]),
            [50, 99, 100]
        );
        // 3 round trips: ceil(1.5) = 2 for p50, ceil(2.97) = 3 for p99.
        assert_eq!(percentiles(&[7, 3, 5], &[(3, 50), (3, 99)]), [5, 7]);
        // One round trip: both are it.
        assert_eq!(percentiles(&[42], &[(1, 50), (1, 99)]), [42, 42]);
    }

    #[test]
    fn ten_milliseconds_and_more_read_as_the_overflow() {
        assert_eq!(
            percentiles(
                &[9_999, 10_000, 123_456_789, u64::MAX],
                &[(4, 25), (4, 50), (4, 99)]
            ),
            [9_999, 10_000, 10_000]
        );
    }
}
