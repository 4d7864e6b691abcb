//! The model's kernel timers, DPCs, spin locks and interrupt time: `KeInitializeTimer`,
//! `KeSetTimer`, `KeCancelTimer`, `KeInitializeDpc`, `KeFlushQueuedDpcs`,
//! `KeAcquireSpinLockRaiseToDpc`, `KeReleaseSpinLock`, `KeQueryInterruptTime`.
//!
//! Time runs [`crate::sync::TIME_SCALE`] times faster than real time, as the model's waits do. A
//! set timer expires on a thread of its own, which runs the timer's DPC at `DISPATCH_LEVEL` in an
//! unprotected context: nothing of the I/O manager holds the image for a DPC, so `DriverUnload`
//! must have cancelled the timer and flushed the DPCs (`KeFlushQueuedDpcs`) before it returns —
//! the model records the image unmapped under a running DPC as a rule broken ([`crate::image`]).
//!
//! Rules recorded (from the pages of each function, learn.microsoft.com/windows-hardware/drivers/
//! ddi/wdm/): a timer or DPC used before it was initialised; a set timer initialised again; an
//! absolute due time (not modelled); a spin lock acquired twice by one thread (a deadlock on
//! Windows), released by a thread that does not hold it, or still held when a callback of the
//! driver returns.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wsk_sys::{KDPC, KIRQL, KSPIN_LOCK, KTIMER, PKDEFERRED_ROUTINE, PVOID};

use crate::image::{self, Guard};
use crate::irql::{self, Irql};
use crate::state::{self, Event};
use crate::sync::TIME_SCALE;

/// A timer's state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timer {
    /// Set and not yet expired or cancelled.
    pub set: bool,
    /// Bumped by every set and cancel: an expiry thread of an older setting does nothing.
    pub generation: u64,
}

/// A DPC object's routine and context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dpc {
    pub routine: usize,
    pub context: usize,
}

/// The model's boot: the interrupt time counts from here.
fn boot() -> Instant {
    static BOOT: OnceLock<Instant> = OnceLock::new();
    *BOOT.get_or_init(Instant::now)
}

/// `KeQueryInterruptTime`: 100 ns units since the model's boot, at the model's time scale.
#[unsafe(no_mangle)]
pub extern "system" fn KeQueryInterruptTime() -> u64 {
    state::with(|s| {
        image::driver_calls(s, "KeQueryInterruptTime");
    });
    interrupt_time()
}

/// The interrupt time now (the model's own reading, not a call of the driver).
pub(crate) fn interrupt_time() -> u64 {
    let elapsed = boot().elapsed().as_nanos() / 100;
    u64::try_from(elapsed.saturating_mul(u128::from(TIME_SCALE))).unwrap_or(u64::MAX)
}

/// `KeInitializeTimer`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeTimer(Timer: *mut KTIMER) {
    let key = Timer as usize;
    state::with(|s| {
        image::driver_calls(s, "KeInitializeTimer");
        if s.timers.get(&key).is_some_and(|t| t.set) {
            s.violation(format!(
                "KeInitializeTimer on {key:#x}: the timer is set (cancel it first)"
            ));
        }
        let generation = s.timers.get(&key).map_or(0, |t| t.generation + 1);
        s.timers.insert(
            key,
            Timer {
                set: false,
                generation,
            },
        );
    });
}

/// `KeInitializeDpc`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeDpc(
    Dpc: *mut KDPC,
    DeferredRoutine: PKDEFERRED_ROUTINE,
    DeferredContext: PVOID,
) {
    let key = Dpc as usize;
    state::with(|s| {
        image::driver_calls(s, "KeInitializeDpc");
        let Some(routine) = DeferredRoutine else {
            s.violation("KeInitializeDpc without a routine".into());
            return;
        };
        s.dpcs.insert(
            key,
            self::Dpc {
                routine: routine as usize,
                context: DeferredContext as usize,
            },
        );
    });
}

/// `KeSetTimer`: the timer expires `-DueTime` (100 ns units, model time) from now, then queues its
/// DPC. Returns TRUE when it was set already.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeSetTimer(Timer: *mut KTIMER, DueTime: i64, Dpc: *mut KDPC) -> u8 {
    let key = Timer as usize;
    let dpc = Dpc as usize;
    let armed = state::with(|s| {
        image::driver_calls(s, "KeSetTimer");
        s.events.push(Event::KeSetTimer { due: DueTime });
        if DueTime > 0 {
            s.violation("KeSetTimer: absolute due times are not modelled".into());
        }
        if dpc != 0 && !s.dpcs.contains_key(&dpc) {
            s.violation(format!("KeSetTimer: DPC {dpc:#x} never initialised"));
        }
        let Some(timer) = s.timers.get_mut(&key) else {
            s.violation(format!("KeSetTimer on {key:#x}: never initialised"));
            return None;
        };
        let was_set = std::mem::replace(&mut timer.set, true);
        timer.generation += 1;
        Some((timer.generation, was_set))
    });
    let Some((generation, was_set)) = armed else {
        return 0;
    };
    let delay = Duration::from_nanos(DueTime.unsigned_abs().saturating_mul(100) / TIME_SCALE);
    std::thread::spawn(move || expire(key, generation, dpc, delay));
    u8::from(was_set)
}

/// The expiry of one setting of a timer: after `delay`, unless it was set again or cancelled,
/// runs the DPC (queued and run in one step: the DPC counts as queued from the expiry on, for
/// `KeFlushQueuedDpcs`).
fn expire(key: usize, generation: u64, dpc: usize, delay: Duration) {
    let superseded = |s: &mut state::State| {
        s.timers
            .get(&key)
            .is_none_or(|t| t.generation != generation)
    };
    if state::wait_for(delay, |s| superseded(s)) {
        return;
    }
    let routine = state::with(|s| {
        if superseded(s) {
            return None;
        }
        if let Some(timer) = s.timers.get_mut(&key) {
            timer.set = false;
        }
        let routine = s.dpcs.get(&dpc).copied()?;
        s.dpcs_queued += 1;
        Some(routine)
    });
    let Some(routine) = routine else {
        return;
    };
    let irql = state::with(|s| irql::callback(s, "DeferredRoutine"));
    IN_DPC.with(|d| d.set(true));
    image::run(Guard::Unprotected, || {
        // SAFETY: the routine the driver gave KeInitializeDpc (a `KDEFERRED_ROUTINE`).
        let function: unsafe extern "system" fn(*mut KDPC, PVOID, PVOID, PVOID) =
            unsafe { std::mem::transmute(routine.routine) };
        irql::at(irql, || {
            // SAFETY: as above, with its DPC and context; no system arguments (a timer's DPC gets
            // the expiry time, which the driver does not use).
            unsafe {
                function(
                    dpc as *mut KDPC,
                    routine.context as PVOID,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            };
        });
        check_no_spin_lock_held("a DPC");
        // A DPC that woke someone returns slowly (its spin lock released): a driver racing its
        // own unload loses the race every time rather than now and then — the unload must flush
        // the DPCs (KeFlushQueuedDpcs) before DriverUnload returns.
        if WOKE_IN_DPC.with(|w| w.replace(false)) {
            image::preempt_after_wake_up();
        }
    });
    IN_DPC.with(|d| d.set(false));
    state::with(|s| s.dpcs_queued -= 1);
}

std::thread_local! {
    /// This thread runs a DPC routine of the driver's.
    static IN_DPC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

std::thread_local! {
    /// The DPC running on this thread queued a work item.
    static WOKE_IN_DPC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes a work item queued by the DPC running on this thread (if one is).
pub(crate) fn note_wake_in_dpc() {
    if IN_DPC.with(std::cell::Cell::get) {
        WOKE_IN_DPC.with(|w| w.set(true));
    }
}

/// `KeCancelTimer`: TRUE when the timer was set (it will not expire now).
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeCancelTimer(Timer: *mut KTIMER) -> u8 {
    let key = Timer as usize;
    state::with(|s| {
        image::driver_calls(s, "KeCancelTimer");
        let Some(timer) = s.timers.get_mut(&key) else {
            s.violation(format!("KeCancelTimer on {key:#x}: never initialised"));
            return 0;
        };
        timer.generation += 1;
        u8::from(std::mem::replace(&mut timer.set, false))
    })
}

/// `KeFlushQueuedDpcs`: returns once no DPC is queued or running.
#[unsafe(no_mangle)]
pub extern "system" fn KeFlushQueuedDpcs() {
    state::with(|s| {
        image::driver_calls(s, "KeFlushQueuedDpcs");
        s.events.push(Event::KeFlushQueuedDpcs);
    });
    if !state::wait_for(crate::WAIT_LIMIT, |s| s.dpcs_queued == 0) {
        state::with(|s| s.violation("KeFlushQueuedDpcs: a DPC never returned".into()));
    }
}

/// `KeAcquireSpinLockRaiseToDpc`: raises to `DISPATCH_LEVEL` and takes the lock (waiting while
/// another thread holds it); returns the IRQL before.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL {
    let key = SpinLock as usize;
    let me = std::thread::current().id();
    let mine = state::with(|s| {
        image::driver_calls(s, "KeAcquireSpinLockRaiseToDpc");
        s.spin_locks.get(&key) == Some(&me)
    });
    if mine {
        state::with(|s| {
            s.violation(format!(
                "KeAcquireSpinLockRaiseToDpc on {key:#x}: this thread holds it already (a deadlock)"
            ));
        });
        panic!("the driver acquires a spin lock it holds (see the rules broken)");
    }
    let taken = state::wait_for(crate::WAIT_LIMIT, |s| {
        if s.spin_locks.contains_key(&key) {
            return false;
        }
        s.spin_locks.insert(key, me);
        true
    });
    if !taken {
        state::with(|s| {
            s.violation(format!(
                "KeAcquireSpinLockRaiseToDpc on {key:#x}: held by another thread for too long"
            ));
        });
        panic!("a spin lock of the driver is never released (see the rules broken)");
    }
    let before = irql::set(Irql::Dispatch.max(irql::current()));
    before.level()
}

/// `KeReleaseSpinLock`: releases the lock and goes back to `NewIrql`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL) {
    let key = SpinLock as usize;
    let me = std::thread::current().id();
    state::with(|s| {
        image::driver_calls(s, "KeReleaseSpinLock");
        if s.spin_locks.get(&key) == Some(&me) {
            s.spin_locks.remove(&key);
        } else {
            s.violation(format!(
                "KeReleaseSpinLock on {key:#x}: not held by this thread"
            ));
        }
    });
    let _ = irql::set(Irql::from_level(NewIrql));
}

/// Records a spin lock still held by this thread when a callback of the driver (`what`) returns.
pub(crate) fn check_no_spin_lock_held(what: &str) {
    let me = std::thread::current().id();
    state::with(|s| {
        if s.spin_locks.values().any(|holder| *holder == me) {
            s.violation(format!("{what} returned holding a spin lock"));
        }
    });
}
