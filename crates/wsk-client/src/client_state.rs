//! [`ClientState`]: the library's state for one client — its pool accounting, its run-time
//! objects and its binding slots — in a static the driver declares. Below the [`crate::Client`]
//! trait (which names it): the layers fill it, the trait only points at it.
//!
//! Everything here is compile-time data or interlocked state: any IRQL.

use crate::binding::BindingSlot;
use crate::pool::PoolState;
use crate::runtime::Runtime;

/// The library's state for one client: its pool accounting and its binding slots (one per
/// provider attached at once; Windows has one WSK provider, the spares cover a provider that
/// re-registers before its old binding is cleaned up).
///
/// Declared by the driver as a static of the sized form `ClientState<[BindingSlot; N]>`; the
/// library sees it as the unsized `ClientState` (`[BindingSlot]`).
pub struct ClientState<Slots: ?Sized = [BindingSlot]> {
    pub(crate) pool: PoolState,
    pub(crate) runtime: Runtime,
    pub(crate) slots: Slots,
}

impl<const N: usize> ClientState<[BindingSlot; N]> {
    /// No binding, no allocation.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            pool: PoolState::new(),
            runtime: Runtime::new(),
            slots: [const { BindingSlot::new() }; N],
        }
    }
}

impl<const N: usize> Default for ClientState<[BindingSlot; N]> {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientState {
    /// Pool blocks allocated through this client's state and not yet freed. Any IRQL.
    #[must_use]
    pub fn live_allocations(&self) -> usize {
        self.pool.live()
    }

    /// How many binding slots are reserved (attaching, attached or detaching). Any IRQL.
    #[must_use]
    pub fn bindings_in_use(&self) -> usize {
        self.slots.iter().filter(|slot| slot.in_use()).count()
    }
}
