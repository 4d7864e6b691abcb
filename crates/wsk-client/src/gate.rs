//! [`Gate`]: a count of users of something that can be withdrawn without blocking — the mechanism
//! behind "calls in flight through a binding, and a detach that completes when the last call
//! returns". It knows nothing of NMR: [`Gate::leave`] only *reports* that the last user of a
//! closing gate left, and the caller decides what that completes (compare Rust-for-Linux's
//! `Revocable`, whose `revoke()` waits instead; a WSK detach callback must not wait).
//!
//! A gate is reused: a user reserves it ([`Gate::reserve`]), opens it ([`Gate::open`]), others
//! [`Gate::enter`] and [`Gate::leave`]; [`Gate::close`] stops new entries; [`Gate::free`] makes it
//! reservable again. A generation, bumped by `free`, makes a late `open` from an earlier life fail
//! instead of opening the gate for whoever reserved it since (the ABA problem).
//!
//! The state is one atomic word:
//!
//! | bits  | meaning                                                 |
//! |-------|---------------------------------------------------------|
//! | 0-31  | users inside                                            |
//! | 32    | `RESERVED`: reserved, until freed                       |
//! | 33    | `OPEN`: opened; users may enter                         |
//! | 34    | `CLOSING`: closed; no user may enter                    |
//! | 40-63 | generation, bumped by `free`                            |
//!
//! IRQL: interlocked and non-blocking: any IRQL (the memory holding the gate must be non-paged
//! above `APC_LEVEL`).

use core::sync::atomic::{AtomicU64, Ordering};

/// The atomic word under a gate: `AtomicU64` in the kernel; a model checker's own atomic in the
/// loom test (`tests/loom_gate.rs`), which then explores every interleaving of the gate's
/// operations.
pub trait AtomicWord {
    /// `AtomicU64::load`.
    fn load(&self, order: Ordering) -> u64;
    /// `AtomicU64::store`.
    fn store(&self, value: u64, order: Ordering);
    /// `AtomicU64::compare_exchange`.
    ///
    /// # Errors
    /// The current value when it was not `current`.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    /// `AtomicU64::fetch_sub`.
    fn fetch_sub(&self, value: u64, order: Ordering) -> u64;
    /// `AtomicU64::fetch_or`.
    fn fetch_or(&self, value: u64, order: Ordering) -> u64;

    /// `AtomicU64::fetch_update`, built on [`AtomicWord::compare_exchange`].
    ///
    /// # Errors
    /// The current value when `f` declined it.
    fn fetch_update(&self, mut f: impl FnMut(u64) -> Option<u64>) -> Result<u64, u64> {
        let mut current = self.load(Ordering::Acquire);
        while let Some(new) = f(current) {
            match self.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(previous) => return Ok(previous),
                Err(actual) => current = actual,
            }
        }
        Err(current)
    }
}

impl AtomicWord for AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        Self::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        Self::store(self, value, order);
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        Self::compare_exchange(self, current, new, success, failure)
    }
    fn fetch_sub(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_sub(self, value, order)
    }
    fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_or(self, value, order)
    }
}

const COUNT_MASK: u64 = 0xFFFF_FFFF;
const RESERVED: u64 = 1 << 32;
const OPEN: u64 = 1 << 33;
const CLOSING: u64 = 1 << 34;
const GENERATION_ONE: u64 = 1 << 40;
const GENERATION_MASK: u64 = !(GENERATION_ONE - 1);

/// Which life of a gate a reservation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl Generation {
    /// The raw value, to keep in an atomic.
    #[must_use]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A generation kept with [`Generation::raw`].
    #[must_use]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// Why [`Gate::enter`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not reserved: nothing behind the gate.
    Free,
    /// Reserved but not open yet, or closing.
    Closed,
    /// `u32::MAX` users inside.
    Full,
}

/// What [`Gate::close`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Nobody inside: closed at once.
    Idle,
    /// This many users inside: the last to leave is told so by [`Gate::leave`].
    Pending(u32),
}

/// What [`Gate::leave`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// Left; others are inside, or the gate is not closing.
    Left,
    /// Left as the last user of a gate whose [`Gate::close`] returned [`Close::Pending`]: the
    /// caller completes the close. Exactly one `leave` per such close returns this.
    LastOfClosing,
}

/// See the module documentation.
pub struct Gate<W = AtomicU64> {
    state: W,
}

impl Gate {
    /// A free gate.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
        }
    }
}

impl<W: AtomicWord> Gate<W> {
    /// A free gate over `word`, which must hold 0 (for a model checker's atomics).
    #[must_use]
    pub const fn with_word(word: W) -> Self {
        Self { state: word }
    }

    /// Reserves a free gate; `None` when it is in use.
    pub fn reserve(&self) -> Option<Generation> {
        let state = self.state.load(Ordering::Acquire);
        if state & !GENERATION_MASK != 0 {
            return None;
        }
        self.state
            .compare_exchange(state, state | RESERVED, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Generation(state & GENERATION_MASK))
    }

    /// Whether the gate is reserved (in any state until freed).
    #[must_use]
    pub fn is_reserved(&self) -> bool {
        self.state.load(Ordering::Acquire) & RESERVED != 0
    }

    /// Opens the gate reserved as `generation`. Fails when it was closed meanwhile, or freed
    /// (and perhaps reserved again) since.
    pub fn open(&self, generation: Generation) -> bool {
        self.state
            .compare_exchange(
                generation.0 | RESERVED,
                generation.0 | RESERVED | OPEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Enters an open gate. Every `Ok` must be matched by one [`Gate::leave`].
    ///
    /// # Errors
    /// [`Refused`]: free, not open or closing, or full.
    pub fn enter(&self) -> Result<(), Refused> {
        self.state
            .fetch_update(|state| {
                let open = state & (RESERVED | OPEN | CLOSING) == RESERVED | OPEN;
                (open && state & COUNT_MASK < COUNT_MASK).then_some(state + 1)
            })
            .map(|_| ())
            .map_err(|state| {
                if state & RESERVED == 0 {
                    Refused::Free
                } else if state & (OPEN | CLOSING) == OPEN {
                    Refused::Full
                } else {
                    Refused::Closed
                }
            })
    }

    /// Leaves the gate (after a successful [`Gate::enter`]).
    #[must_use = "the last user of a closing gate must complete the close"]
    pub fn leave(&self) -> Leave {
        let previous = self.state.fetch_sub(1, Ordering::AcqRel);
        if previous & CLOSING != 0 && previous & COUNT_MASK == 1 {
            Leave::LastOfClosing
        } else {
            Leave::Left
        }
    }

    /// Stops new entries; never blocks. Call once per reservation.
    pub fn close(&self) -> Close {
        let previous = self.state.fetch_or(CLOSING, Ordering::AcqRel);
        #[allow(clippy::cast_possible_truncation)] // masked to 32 bits
        match (previous & COUNT_MASK) as u32 {
            0 => Close::Idle,
            count => Close::Pending(count),
        }
    }

    /// Frees the gate reserved as `generation` for a later [`Gate::reserve`]; nobody may be
    /// inside (the close completed, or the gate was never opened).
    pub fn free(&self, generation: Generation) {
        self.state.store(
            generation.0.wrapping_add(GENERATION_ONE) & GENERATION_MASK,
            Ordering::Release,
        );
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::{Close, Gate, Leave, Refused};

    #[test]
    fn a_free_gate_refuses_entry() {
        let gate = Gate::new();
        assert_eq!(gate.enter(), Err(Refused::Free));
        assert!(!gate.is_reserved());
    }

    #[test]
    fn reserved_but_not_open_refuses_entry() {
        let gate = Gate::new();
        let _generation = gate.reserve().unwrap();
        assert!(gate.is_reserved());
        assert_eq!(gate.reserve(), None);
        assert_eq!(gate.enter(), Err(Refused::Closed));
    }

    #[test]
    fn close_with_nobody_inside_is_idle() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        gate.enter().unwrap();
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.close(), Close::Idle);
        assert_eq!(gate.enter(), Err(Refused::Closed));
    }

    #[test]
    fn only_the_last_leave_of_a_closing_gate_completes() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        for _ in 0..3 {
            gate.enter().unwrap();
        }
        assert_eq!(gate.close(), Close::Pending(3));
        assert_eq!(gate.enter(), Err(Refused::Closed));
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.leave(), Leave::LastOfClosing);
    }

    #[test]
    fn open_after_close_fails() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert_eq!(gate.close(), Close::Idle);
        assert!(!gate.open(generation));
    }

    #[test]
    fn a_stale_open_fails_after_free_and_reuse() {
        let gate = Gate::new();
        let old = gate.reserve().unwrap();
        gate.free(old);
        let new = gate.reserve().unwrap();
        assert_ne!(old, new);
        assert!(!gate.open(old), "an open from an earlier life succeeded");
        assert_eq!(gate.enter(), Err(Refused::Closed));
        assert!(gate.open(new));
    }

    #[test]
    fn free_makes_it_reservable_again() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        assert_eq!(gate.close(), Close::Idle);
        gate.free(generation);
        assert!(!gate.is_reserved());
        assert!(gate.reserve().is_some());
    }

    #[test]
    fn entries_and_leaves_on_threads_complete_the_close_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::thread;

        for _ in 0..200 {
            let gate = Gate::new();
            let generation = gate.reserve().unwrap();
            assert!(gate.open(generation));
            let completions = AtomicUsize::new(0);
            let closed_idle = thread::scope(|scope| {
                for _ in 0..3 {
                    scope.spawn(|| {
                        for _ in 0..50 {
                            if gate.enter().is_ok() && gate.leave() == Leave::LastOfClosing {
                                completions.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                scope.spawn(|| gate.close()).join().unwrap() == Close::Idle
            });
            let expected = usize::from(!closed_idle);
            assert_eq!(completions.load(Ordering::Relaxed), expected);
        }
    }
}
