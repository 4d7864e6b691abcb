//! The model's kernel events: `KeInitializeEvent`, `KeSetEvent`, `KeClearEvent`,
//! `KeWaitForSingleObject` (on events only), keyed by the event's address.

use std::time::Duration;

use wsk_sys::{EVENT_TYPE, KEVENT, NTSTATUS, NotificationEvent, PVOID, SynchronizationEvent};

use crate::image;
use crate::state::{self, Event};
use crate::{Status, WAIT_LIMIT};

/// An event's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventState {
    pub kind: EVENT_TYPE,
    pub signalled: bool,
}

/// `KeInitializeEvent`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: u8) {
    state::with(|s| {
        image::driver_calls(s, "KeInitializeEvent");
        if Type != NotificationEvent && Type != SynchronizationEvent {
            s.violation(format!("KeInitializeEvent: type {Type}"));
        }
        s.kernel_events.insert(
            Event as usize,
            EventState {
                kind: Type,
                signalled: State != 0,
            },
        );
    });
}

/// `KeSetEvent`: returns the previous state.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeSetEvent(Event: *mut KEVENT, _Increment: i32, Wait: u8) -> i32 {
    let previous = state::with(|s| {
        image::driver_calls(s, "KeSetEvent");
        s.events.push(Event::KeSetEvent);
        if Wait != 0 {
            s.violation("KeSetEvent with Wait TRUE (the model does not support it)".into());
        }
        if let Some(event) = s.kernel_events.get_mut(&(Event as usize)) {
            i32::from(std::mem::replace(&mut event.signalled, true))
        } else {
            s.violation(format!("KeSetEvent on {Event:p}, never initialised"));
            0
        }
    });
    image::preempt_after_wake_up();
    image::pause_signalling_routine();
    previous
}

/// `KeClearEvent`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeClearEvent(Event: *mut KEVENT) {
    state::with(|s| {
        image::driver_calls(s, "KeClearEvent");
        match s.kernel_events.get_mut(&(Event as usize)) {
            Some(event) => event.signalled = false,
            None => s.violation(format!("KeClearEvent on {Event:p}, never initialised")),
        }
    });
}

/// How much faster than real time the model's timeouts run (a 5 s timeout lasts 200 ms).
pub const TIME_SCALE: u64 = 25;

std::thread_local! {
    /// The event this thread waited on last and how long, in model time, it has waited on it
    /// in a row (timeouts included).
    static WAITED: std::cell::Cell<(usize, Duration)> = const { std::cell::Cell::new((0, Duration::ZERO)) };
}

/// `KeWaitForSingleObject` on an event: `STATUS_SUCCESS` once signalled (a synchronization event
/// is reset by the wait), `STATUS_TIMEOUT` when a relative timeout runs out (timeouts run
/// [`TIME_SCALE`] times faster than real time). A wait on one event that lasts longer than
/// [`WAIT_LIMIT`] in all, timeouts included, is a hang: recorded, and the waiting thread panics
/// (which aborts the test process) rather than hanging the test for ever.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeWaitForSingleObject(
    Object: PVOID,
    _WaitReason: i32,
    _WaitMode: i8,
    _Alertable: u8,
    Timeout: *const i64,
) -> NTSTATUS {
    let key = Object as usize;
    // SAFETY: per the contract, NULL or a valid LARGE_INTEGER.
    let timeout = unsafe { Timeout.as_ref() }.copied();
    let known = state::with(|s| {
        image::driver_calls(s, "KeWaitForSingleObject");
        if timeout != Some(0) {
            crate::irql::check_condition(s, "KeWaitForSingleObject", crate::irql::Condition::Wait);
            crate::io::check_short_work_item(s, "KeWaitForSingleObject");
        }
        s.events.push(Event::KeWaitForSingleObject { timeout });
        if matches!(timeout, Some(t) if t > 0) {
            s.violation("KeWaitForSingleObject: absolute timeouts are not modelled".into());
        }
        s.kernel_events.contains_key(&key)
    });
    if !known {
        state::with(|s| s.violation(format!("KeWaitForSingleObject on {Object:p}, not an event")));
        return Status::INVALID_PARAMETER.raw();
    }
    let limit = match timeout {
        // Relative, in 100 ns units.
        Some(t) => Duration::from_nanos(t.unsigned_abs().saturating_mul(100) / TIME_SCALE),
        None => WAIT_LIMIT,
    };
    let started = std::time::Instant::now();
    let signalled = state::wait_for(limit, |s| match s.kernel_events.get_mut(&key) {
        Some(event) if event.signalled => {
            if event.kind == SynchronizationEvent {
                event.signalled = false;
            }
            true
        }
        _ => false,
    });
    let waited = WAITED.with(|w| {
        let (last, total) = w.get();
        let total = if last == key { total } else { Duration::ZERO } + started.elapsed();
        w.set(if signalled {
            (0, Duration::ZERO)
        } else {
            (key, total)
        });
        total
    });
    if !signalled && waited > WAIT_LIMIT {
        state::with(|s| {
            s.violation(format!(
                "KeWaitForSingleObject on {Object:p}: still not signalled after {waited:?} (a hang)"
            ));
        });
        panic!("the driver hangs in KeWaitForSingleObject on {Object:p} (see the rules broken)");
    }
    match (signalled, timeout) {
        (true, _) => Status::SUCCESS.raw(),
        (false, Some(_)) => wsk_sys::STATUS_TIMEOUT,
        (false, None) => {
            state::with(|s| {
                s.violation("KeWaitForSingleObject without timeout waited forever (a hang)".into());
            });
            wsk_sys::STATUS_TIMEOUT
        }
    }
}
