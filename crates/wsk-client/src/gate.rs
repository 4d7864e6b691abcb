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
//! Two parties may close a gate, each once, in any order: the [`Closer::Owner`] (a binding's
//! detach) and the [`Closer::Sweep`] (the client's unload, which closes every gate it has, free
//! ones included: a swept gate cannot be reserved until [`Gate::unsweep`]). The last leave tells
//! which of them it completes. So one atomic per reference suffices for both the detach and the
//! unload to wait for it.
//!
//! An entry is one `fetch_add`, a leave one `fetch_sub` — the cost of a bare reference count. An
//! entry that finds the gate not open leaves again at once: for that instant it is counted like
//! any user, so its leave may be the last one of a close, and it completes that close like any
//! other (the caller gets the [`Leave`] with the refusal). Completing is *claimed*: the closer
//! that finds nobody inside (in the same atomic step as its flag), or a leave that brings the
//! count to zero, sets the close's `DONE` bit, and only the one that set it completes — a
//! momentary entry after an idle close can never complete it twice.
//!
//! The state is one atomic word:
//!
//! | bits  | meaning                                                 |
//! |-------|---------------------------------------------------------|
//! | 0-31  | users inside                                            |
//! | 32    | `RESERVED`: reserved, until freed                       |
//! | 33    | `OPEN`: opened; users may enter                         |
//! | 34    | `CLOSING`: closed by its owner; no user may enter       |
//! | 35    | `SWEPT`: closed by the sweep; no user may enter, no reservation |
//! | 36    | `OWNER_DONE`: the owner's close was claimed for completion |
//! | 37    | `SWEEP_DONE`: the sweep's close was claimed for completion |
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
    /// `AtomicU64::fetch_add`.
    fn fetch_add(&self, value: u64, order: Ordering) -> u64;
    /// `AtomicU64::fetch_sub`.
    fn fetch_sub(&self, value: u64, order: Ordering) -> u64;
    /// `AtomicU64::fetch_or`.
    fn fetch_or(&self, value: u64, order: Ordering) -> u64;
    /// `AtomicU64::fetch_and`.
    fn fetch_and(&self, value: u64, order: Ordering) -> u64;

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
    fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_add(self, value, order)
    }
    fn fetch_sub(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_sub(self, value, order)
    }
    fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_or(self, value, order)
    }
    fn fetch_and(&self, value: u64, order: Ordering) -> u64 {
        Self::fetch_and(self, value, order)
    }
}

const COUNT_MASK: u64 = 0xFFFF_FFFF;
/// Entries from this count on are refused ([`Refused::Full`]): with the momentary ones, the count
/// stays far below the flags.
const COUNT_LIMIT: u64 = 1 << 31;
const RESERVED: u64 = 1 << 32;
const OPEN: u64 = 1 << 33;
const CLOSING: u64 = 1 << 34;
const SWEPT: u64 = 1 << 35;
const OWNER_DONE: u64 = 1 << 36;
const SWEEP_DONE: u64 = 1 << 37;
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
    /// Reserved but not open yet, or closed by its owner.
    Closed,
    /// Closed by the sweep.
    Swept,
    /// 2^31 users inside.
    Full,
}

/// Who closes a gate ([`Gate::close`]); each closes it at most once per reservation (the sweep
/// once per [`Gate::unsweep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    /// Whoever reserved it (a binding's detach).
    Owner,
    /// A sweep over every gate (the client's unload).
    Sweep,
}

/// What [`Gate::close`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Nobody inside: closed at once; no leave will complete it.
    Idle,
    /// This many users inside: the last to leave is told so by [`Gate::leave`] and completes the
    /// close.
    Pending(u32),
}

/// What [`Gate::leave`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leave {
    /// Left; others are inside, or the gate is not closing.
    Left,
    /// Left as the last user of a gate whose [`Gate::close`] returned [`Close::Pending`] to the
    /// closers named here: the caller completes their closes. For each such close exactly one
    /// `leave` names its closer.
    LastOfClosing {
        /// The owner's close is to be completed.
        owner: bool,
        /// The sweep's close is to be completed.
        sweep: bool,
    },
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

    /// Reserves a free gate; `None` when it is in use or swept.
    pub fn reserve(&self) -> Option<Generation> {
        // A momentary entry may be counted in a free gate: the count is not part of "free".
        self.state
            .fetch_update(|state| {
                let busy = RESERVED | OPEN | CLOSING | SWEPT | OWNER_DONE;
                (state & busy == 0).then_some(state | RESERVED)
            })
            .ok()
            .map(|state| Generation(state & GENERATION_MASK))
    }

    /// Whether the gate is open: reserved, opened, and closed by neither closer.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) & (RESERVED | OPEN | CLOSING | SWEPT) == RESERVED | OPEN
    }

    /// Whether the gate is reserved (in any state until freed).
    #[must_use]
    pub fn is_reserved(&self) -> bool {
        self.state.load(Ordering::Acquire) & RESERVED != 0
    }

    /// Opens the gate reserved as `generation`. Fails when it was closed or swept meanwhile, or
    /// freed (and perhaps reserved again) since.
    pub fn open(&self, generation: Generation) -> bool {
        self.state
            .fetch_update(|state| {
                let life = GENERATION_MASK | RESERVED | OPEN | CLOSING | SWEPT;
                (state & life == generation.0 | RESERVED).then_some(state | OPEN)
            })
            .is_ok()
    }

    /// Enters an open gate. Every `Ok` must be matched by one [`Gate::leave`].
    ///
    /// # Errors
    /// [`Refused`] — free, not open, closed, swept or full — with the [`Leave`] of the entry
    /// that found it so: the caller acts on it as on any leave (it may complete a close).
    pub fn enter(&self) -> Result<(), (Refused, Leave)> {
        let previous = self.state.fetch_add(1, Ordering::AcqRel);
        let open = previous & (RESERVED | OPEN | CLOSING | SWEPT) == RESERVED | OPEN;
        if open && previous & COUNT_MASK < COUNT_LIMIT {
            return Ok(());
        }
        let refused = if previous & RESERVED == 0 {
            Refused::Free
        } else if previous & SWEPT != 0 {
            Refused::Swept
        } else if previous & (OPEN | CLOSING) == OPEN {
            Refused::Full
        } else {
            Refused::Closed
        };
        Err((refused, self.leave()))
    }

    /// Enters once more on behalf of a user already inside (its entry held for the duration of
    /// this call): never refused, closed gate or not. The caller's own entry keeps the count
    /// above zero, so no close can complete meanwhile; the new entry is left like any other.
    /// (A socket's close, made from a reference its socket holds, during a detach.)
    pub fn enter_held(&self) {
        let _ = self.state.fetch_add(1, Ordering::AcqRel);
    }

    /// Leaves the gate (after an entry).
    #[must_use = "the last user of a closing gate must complete the close"]
    pub fn leave(&self) -> Leave {
        let previous = self.state.fetch_sub(1, Ordering::AcqRel);
        if previous & COUNT_MASK != 1 || previous & (CLOSING | SWEPT) == 0 {
            return Leave::Left;
        }
        let owner = previous & CLOSING != 0 && self.claim(previous, CLOSING, OWNER_DONE);
        let sweep = previous & SWEPT != 0 && self.claim(previous, SWEPT, SWEEP_DONE);
        if owner || sweep {
            Leave::LastOfClosing { owner, sweep }
        } else {
            Leave::Left
        }
    }

    /// Claims the completion of the close `closed` (its flag) that `previous` saw: `true` for
    /// the one caller that sets its `done` — in the same life of the gate. (A leave that brought
    /// the count to zero may claim after a momentary entry's leave claimed, completed, and the
    /// gate was freed and reserved again: its claim must not land in the new life.)
    fn claim(&self, previous: u64, closed: u64, done: u64) -> bool {
        let life = previous & GENERATION_MASK;
        self.state
            .fetch_update(|state| {
                let same = state & GENERATION_MASK == life && state & closed != 0;
                (same && state & done == 0).then_some(state | done)
            })
            .is_ok()
    }

    /// Stops new entries on behalf of `closer`; never blocks. Each closer calls it at most once
    /// (the owner once per reservation, the sweep once per [`Gate::unsweep`]).
    pub fn close(&self, closer: Closer) -> Close {
        let (bit, done) = match closer {
            Closer::Owner => (CLOSING, OWNER_DONE),
            Closer::Sweep => (SWEPT, SWEEP_DONE),
        };
        // One atomic step: the flag, and with nobody inside the claim too (no leave can claim
        // before the flag is set, and nobody else sets it).
        let previous = self
            .state
            .fetch_update(|state| {
                let idle = state & COUNT_MASK == 0;
                Some(state | bit | if idle { done } else { 0 })
            })
            .unwrap_or_else(|state| state);
        #[allow(clippy::cast_possible_truncation)] // masked to 32 bits
        match (previous & COUNT_MASK) as u32 {
            0 => Close::Idle,
            count => Close::Pending(count),
        }
    }

    /// [`Gate::close`] by a closer that counts itself inside, in the same atomic step: no user can
    /// be the last to leave before the closer itself has. Returns how many *other* users are
    /// inside; the closer leaves with [`Gate::leave`], and when that leave is the last of the
    /// close (it names the closer) the closer completes its own close. Each closer calls this or
    /// [`Gate::close`] at most once, as for `close`.
    pub fn close_held(&self, closer: Closer) -> u32 {
        let bit = match closer {
            Closer::Owner => CLOSING,
            Closer::Sweep => SWEPT,
        };
        let previous = self
            .state
            .fetch_update(|state| Some((state + 1) | bit))
            .unwrap_or_else(|state| state);
        #[allow(clippy::cast_possible_truncation)] // masked to 32 bits
        let others = (previous & COUNT_MASK) as u32;
        others
    }

    /// Frees the gate reserved as `generation` for a later [`Gate::reserve`]; no user may be
    /// inside but momentary ones (the close completed, or the gate was never opened). A swept gate
    /// stays swept.
    pub fn free(&self, generation: Generation) {
        let next = generation.0.wrapping_add(GENERATION_ONE) & GENERATION_MASK;
        // Kept: momentary entries (they leave into the next life) and the sweep's bits.
        let _ = self
            .state
            .fetch_update(|state| Some(next | (state & (COUNT_MASK | SWEPT | SWEEP_DONE))));
    }

    /// Ends the sweep: the gate may be reserved again once free.
    pub fn unsweep(&self) {
        self.state
            .fetch_and(!(SWEPT | SWEEP_DONE), Ordering::AcqRel);
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
    use super::{Close, Closer, Gate, Leave, Refused};

    #[test]
    fn a_free_gate_refuses_entry() {
        let gate = Gate::new();
        assert_eq!(gate.enter(), Err((Refused::Free, Leave::Left)));
        assert!(!gate.is_reserved());
    }

    #[test]
    fn reserved_but_not_open_refuses_entry() {
        let gate = Gate::new();
        let _generation = gate.reserve().unwrap();
        assert!(gate.is_reserved());
        assert_eq!(gate.reserve(), None);
        assert_eq!(
            gate.enter().map_err(|(refused, _)| refused),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn close_with_nobody_inside_is_idle() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        gate.enter().unwrap();
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
        assert_eq!(
            gate.enter().map_err(|(refused, _)| refused),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn only_the_last_leave_of_a_closing_gate_completes() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        for _ in 0..3 {
            gate.enter().unwrap();
        }
        assert_eq!(gate.close(Closer::Owner), Close::Pending(3));
        assert_eq!(
            gate.enter().map_err(|(refused, _)| refused),
            Err(Refused::Closed)
        );
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(
            gate.leave(),
            Leave::LastOfClosing {
                owner: true,
                sweep: false
            }
        );
    }

    #[test]
    fn open_after_close_fails() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
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
        assert_eq!(
            gate.enter().map_err(|(refused, _)| refused),
            Err(Refused::Closed)
        );
        assert!(gate.open(new));
    }

    #[test]
    fn free_makes_it_reservable_again() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
        gate.free(generation);
        assert!(!gate.is_reserved());
        assert!(gate.reserve().is_some());
    }

    #[test]
    fn a_swept_gate_refuses_entry_and_reservation_until_unswept() {
        let gate = Gate::new();
        assert_eq!(gate.close(Closer::Sweep), Close::Idle);
        assert_eq!(gate.reserve(), None, "a swept free gate was reserved");
        gate.unsweep();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        gate.enter().unwrap();
        assert_eq!(gate.close(Closer::Sweep), Close::Pending(1));
        assert_eq!(
            gate.enter().map_err(|(refused, _)| refused),
            Err(Refused::Swept)
        );
        assert_eq!(
            gate.leave(),
            Leave::LastOfClosing {
                owner: false,
                sweep: true
            }
        );
        // The owner's detach after the sweep: idle, and the free keeps the sweep.
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
        gate.free(generation);
        assert_eq!(gate.reserve(), None, "the free undid the sweep");
        gate.unsweep();
        assert!(gate.reserve().is_some());
    }

    #[test]
    fn the_last_leave_completes_both_closers_that_found_users() {
        let gate = Gate::new();
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        gate.enter().unwrap();
        gate.enter().unwrap();
        assert_eq!(gate.close(Closer::Owner), Close::Pending(2));
        assert_eq!(gate.leave(), Leave::Left);
        assert_eq!(gate.close(Closer::Sweep), Close::Pending(1));
        assert_eq!(
            gate.leave(),
            Leave::LastOfClosing {
                owner: true,
                sweep: true
            }
        );
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
                            // A refused entry's own leave may complete the close too.
                            let leave = match gate.enter() {
                                Ok(()) => gate.leave(),
                                Err((_, leave)) => leave,
                            };
                            if matches!(leave, Leave::LastOfClosing { .. }) {
                                completions.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                scope.spawn(|| gate.close(Closer::Owner)).join().unwrap() == Close::Idle
            });
            let expected = usize::from(!closed_idle);
            assert_eq!(completions.load(Ordering::Relaxed), expected);
        }
    }
}
