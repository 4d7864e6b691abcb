//! Time as the kernel counts it: [`Duration`] (a span, in the kernel's 100 ns units), [`Instant`]
//! (a point of the interrupt time, `KeQueryInterruptTime`: 100 ns units since the system started,
//! never adjusted with the clock) and [`Timeout`] (how long a wait may last, or no limit).
//!
//! A kernel API takes a relative wait as a *negative* 100 ns count and an absolute one as a
//! positive system time; [`Timeout::relative_100ns`] gives the negative count, so no caller
//! flips a sign.
//!
//! [`PerformanceCounter`] reads `KeQueryPerformanceCounter`, for timing a transfer finely.
//!
//! IRQL: every function at any IRQL (`KeQueryInterruptTime`'s), except
//! [`PerformanceCounter::find`] (`PASSIVE_LEVEL`).

use crate::sys::{
    KeQueryInterruptTime, LARGE_INTEGER, MmGetSystemRoutineAddress,
    PFN_KE_QUERY_PERFORMANCE_COUNTER, UNICODE_STRING,
};

/// A span of time, in 100 ns units (the kernel's), never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    ticks: u64,
}

impl Duration {
    /// No time.
    pub const ZERO: Self = Self { ticks: 0 };
    /// The longest span (about 58,000 years).
    pub const MAX: Self = Self { ticks: u64::MAX };

    /// `ticks` 100 ns units.
    #[must_use]
    pub const fn from_ticks(ticks: u64) -> Self {
        Self { ticks }
    }

    /// `micros` microseconds (saturating).
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Self {
            ticks: micros.saturating_mul(10),
        }
    }

    /// `millis` milliseconds (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self {
            ticks: millis.saturating_mul(10_000),
        }
    }

    /// `secs` seconds (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            ticks: secs.saturating_mul(10_000_000),
        }
    }

    /// The span in 100 ns units.
    #[must_use]
    pub const fn as_ticks(self) -> u64 {
        self.ticks
    }

    /// The span in whole milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.ticks / 10_000
    }

    /// `self + other`, saturating.
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        Self {
            ticks: self.ticks.saturating_add(other.ticks),
        }
    }

    /// `self - other`, or zero.
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self {
            ticks: self.ticks.saturating_sub(other.ticks),
        }
    }

    /// The kernel's relative form: the negative 100 ns count `KeSetTimer` and
    /// `KeWaitForSingleObject` take (a span too long for an `i64` is the longest one that fits).
    #[must_use]
    pub const fn relative_100ns(self) -> i64 {
        if self.ticks > i64::MAX as u64 {
            -i64::MAX
        } else {
            // At most i64::MAX (checked above).
            #[allow(clippy::cast_possible_wrap)]
            let ticks = self.ticks as i64;
            -ticks
        }
    }
}

/// A point of the interrupt time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    ticks: u64,
}

impl Instant {
    /// Now (`KeQueryInterruptTime`).
    #[must_use]
    pub fn now() -> Self {
        // SAFETY: no arguments; any IRQL.
        let ticks = unsafe { KeQueryInterruptTime() };
        Self { ticks }
    }

    /// The instant `ticks` 100 ns units after the system started.
    #[must_use]
    pub const fn from_ticks(ticks: u64) -> Self {
        Self { ticks }
    }

    /// 100 ns units since the system started.
    #[must_use]
    pub const fn as_ticks(self) -> u64 {
        self.ticks
    }

    /// `duration` after this instant (saturating).
    #[must_use]
    pub const fn saturating_add(self, duration: Duration) -> Self {
        Self {
            ticks: self.ticks.saturating_add(duration.ticks),
        }
    }

    /// The time from `earlier` to this instant, or zero when `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration {
            ticks: self.ticks.saturating_sub(earlier.ticks),
        }
    }

    /// The time since this instant.
    #[must_use]
    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }
}

/// How long a wait may last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// No limit.
    Never,
    /// At most this long.
    After(Duration),
}

impl Timeout {
    /// At most `millis` milliseconds.
    #[must_use]
    pub const fn millis(millis: u64) -> Self {
        Self::After(Duration::from_millis(millis))
    }

    /// At most `secs` seconds.
    #[must_use]
    pub const fn secs(secs: u64) -> Self {
        Self::After(Duration::from_secs(secs))
    }

    /// The kernel's form: `None` for no limit, else the negative (relative) 100 ns count.
    #[must_use]
    pub const fn relative_100ns(self) -> Option<i64> {
        match self {
            Self::Never => None,
            Self::After(duration) => Some(duration.relative_100ns()),
        }
    }
}

/// The name [`PerformanceCounter::find`] looks up, in UTF-16.
static COUNTER_NAME: [u16; 25] = crate::pool::ascii_to_utf16(*b"KeQueryPerformanceCounter");

/// The performance counter (`KeQueryPerformanceCounter`), looked up by name rather than imported:
/// Wine 8 exports it only from hal.dll, and `MmGetSystemRoutineAddress` searches both.
pub struct PerformanceCounter {
    query: PFN_KE_QUERY_PERFORMANCE_COUNTER,
    frequency: u64,
}

impl PerformanceCounter {
    /// Looks `KeQueryPerformanceCounter` up; `None` where the system has none to give.
    ///
    /// IRQL: `PASSIVE_LEVEL` (`MmGetSystemRoutineAddress`).
    #[must_use]
    pub fn find() -> Option<Self> {
        #[allow(clippy::cast_possible_truncation)] // 50 bytes
        const NAME_BYTES: u16 = (COUNTER_NAME.len() * size_of::<u16>()) as u16;
        let name = UNICODE_STRING {
            Length: NAME_BYTES,
            MaximumLength: NAME_BYTES,
            Buffer: COUNTER_NAME.as_ptr().cast_mut(),
        };
        // SAFETY: a valid counted string over a static buffer, at PASSIVE_LEVEL; the routine only
        // reads it.
        let routine = unsafe { MmGetSystemRoutineAddress(&raw const name) };
        if routine.is_null() {
            return None;
        }
        // SAFETY: what MmGetSystemRoutineAddress returned for "KeQueryPerformanceCounter", whose
        // signature is PFN_KE_QUERY_PERFORMANCE_COUNTER; function and data pointers have one size.
        let query: PFN_KE_QUERY_PERFORMANCE_COUNTER = unsafe { core::mem::transmute(routine) };
        let mut frequency: LARGE_INTEGER = 0;
        // SAFETY: any IRQL; `frequency` is a writable LARGE_INTEGER for the call.
        let _ = unsafe { query(&raw mut frequency) };
        let frequency = u64::try_from(frequency).ok().filter(|f| *f > 0)?;
        Some(Self { query, frequency })
    }

    /// The counter now.
    ///
    /// IRQL: any.
    #[must_use]
    pub fn now(&self) -> u64 {
        // SAFETY: any IRQL; NULL: no frequency wanted.
        let ticks = unsafe { (self.query)(core::ptr::null_mut()) };
        u64::try_from(ticks).unwrap_or(0)
    }

    /// Its ticks per second (never 0).
    #[must_use]
    pub const fn frequency(&self) -> u64 {
        self.frequency
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, Timeout};

    #[test]
    fn units() {
        assert_eq!(Duration::from_secs(5).as_ticks(), 50_000_000);
        assert_eq!(Duration::from_millis(1).as_ticks(), 10_000);
        assert_eq!(Duration::from_micros(1).as_ticks(), 10);
        assert_eq!(Duration::from_millis(1500).as_millis(), 1500);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX, "saturates");
    }

    #[test]
    fn the_kernel_form_is_negative_and_never_overflows() {
        assert_eq!(Timeout::secs(5).relative_100ns(), Some(-50_000_000));
        assert_eq!(Timeout::Never.relative_100ns(), None);
        assert_eq!(Duration::ZERO.relative_100ns(), 0);
        assert_eq!(Duration::MAX.relative_100ns(), -i64::MAX);
    }

    #[test]
    fn instants() {
        let start = Instant::from_ticks(100);
        let later = start.saturating_add(Duration::from_ticks(50));
        assert_eq!(later.saturating_duration_since(start).as_ticks(), 50);
        assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
    }
}
