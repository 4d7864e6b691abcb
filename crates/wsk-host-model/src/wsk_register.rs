//! The model's WSK registration functions (`WskRegister`, `WskCaptureProviderNPI`,
//! `WskReleaseProviderNPI`, `WskQueryProviderCharacteristics`, `WskDeregister`), on top of the
//! model's providers: the first registered WSK provider is "the WSK subsystem".

use std::time::Duration;

use wsk_sys::{
    NPI_WSK_INTERFACE_ID, NTSTATUS, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_INFINITE_WAIT,
    WSK_PROVIDER_CHARACTERISTICS, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};

use crate::image;
use crate::state::{self, Event, State};
use crate::sync::TIME_SCALE;
use crate::{Status, WAIT_LIMIT};

/// A `WskRegister` registration.
pub(crate) struct WskRegistration {
    /// The client dispatch's version.
    pub version: u16,
    /// Captured NPIs not yet released.
    pub captures: usize,
    /// `WskDeregister` was called.
    pub deregistered: bool,
}

/// The model's WSK subsystem: the first registered provider whose NPI is WSK.
fn subsystem(s: &State) -> Option<usize> {
    s.providers
        .iter()
        .position(|p| p.registered && p.config.npi_id == NPI_WSK_INTERFACE_ID)
}

/// `WskRegister`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskRegister(
    WskClientNpi: *const WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    // SAFETY: per the contract, a valid client NPI.
    let dispatch = unsafe { (*WskClientNpi).Dispatch.cast::<WSK_CLIENT_DISPATCH>() };
    // SAFETY: per the contract, the NPI's dispatch is valid.
    let version = unsafe { (*dispatch).Version };
    let key = WskRegistration as usize;
    state::with(|s| {
        let injected = image::driver_calls(s, "WskRegister");
        let status = injected
            .or(s.wsk_register_failure)
            .unwrap_or(Status::SUCCESS);
        s.events.push(Event::WskRegister { version, status });
        if status != Status::SUCCESS {
            return status.raw();
        }
        if s.wsk_registrations
            .get(&key)
            .is_some_and(|r| !r.deregistered)
        {
            s.violation("WskRegister on a registration that is still registered".into());
        }
        s.wsk_registrations.insert(
            key,
            WskRegistration {
                version,
                captures: 0,
                deregistered: false,
            },
        );
        Status::SUCCESS.raw()
    })
}

/// `WskQueryProviderCharacteristics`: the subsystem's range.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskQueryProviderCharacteristics(
    WskRegistration: *mut WSK_REGISTRATION,
    WskProviderCharacteristics: *mut WSK_PROVIDER_CHARACTERISTICS,
) -> NTSTATUS {
    let key = WskRegistration as usize;
    let answer = state::with(|s| {
        image::driver_calls(s, "WskQueryProviderCharacteristics");
        if s.wsk_registrations.get(&key).is_none_or(|r| r.deregistered) {
            s.violation("WskQueryProviderCharacteristics on an unregistered registration".into());
            return Err(Status::INVALID_PARAMETER);
        }
        let provider = subsystem(s).ok_or(Status::DEVICE_NOT_READY)?;
        Ok(s.providers[provider].memory.characteristics)
    });
    match answer {
        Ok(characteristics) => {
            // SAFETY: per the contract, a valid out-pointer.
            unsafe { WskProviderCharacteristics.write(characteristics) };
            Status::SUCCESS.raw()
        }
        Err(status) => status.raw(),
    }
}

/// `WskCaptureProviderNPI`: waits (in model time) for the subsystem when asked to; answers
/// `STATUS_NOINTERFACE` for a version the provider does not accept.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    let key = WskRegistration as usize;
    let version = state::with(|s| {
        if WaitTimeout != wsk_sys::WSK_NO_WAIT {
            crate::irql::check_condition(
                s,
                "WskCaptureProviderNPI",
                crate::irql::Condition::Blocking,
            );
            crate::io::check_short_work_item(s, "WskCaptureProviderNPI");
        }
        if let Some(status) = image::driver_calls(s, "WskCaptureProviderNPI") {
            s.events.push(Event::WskCaptureProviderNPI { status });
            return Err(status);
        }
        match s.wsk_registrations.get(&key) {
            Some(r) if !r.deregistered => Ok(Some(r.version)),
            _ => Ok(None),
        }
    });
    let version = match version {
        Ok(version) => version,
        Err(status) => return status.raw(),
    };
    let Some(version) = version else {
        state::with(|s| {
            s.events.push(Event::WskCaptureProviderNPI {
                status: Status::DEVICE_NOT_READY,
            });
        });
        return Status::DEVICE_NOT_READY.raw();
    };
    let limit = match WaitTimeout {
        WSK_INFINITE_WAIT => WAIT_LIMIT,
        ms => Duration::from_millis(u64::from(ms)) / u32::try_from(TIME_SCALE).unwrap_or(1),
    };
    let _ = state::wait_for(limit, |s| subsystem(s).is_some());
    let answer = state::with(|s| {
        let Some(index) = subsystem(s) else {
            s.events.push(Event::WskCaptureProviderNPI {
                status: Status::DEVICE_NOT_READY,
            });
            return Err(Status::DEVICE_NOT_READY);
        };
        let provider = &mut s.providers[index];
        let status = provider.config.answer_for(version);
        let outs = (status == Status::SUCCESS).then(|| {
            provider.memory.dispatch.Version = provider.config.dispatch_version.unwrap_or(version);
            (
                provider.memory.wsk_client,
                &raw const provider.memory.dispatch,
            )
        });
        s.events.push(Event::WskCaptureProviderNPI { status });
        let (client, dispatch) = outs.ok_or(status)?;
        if let Some(r) = s.wsk_registrations.get_mut(&key) {
            r.captures += 1;
        }
        Ok((client, dispatch as usize))
    });
    match answer {
        Ok((client, dispatch)) => {
            // SAFETY: per the contract, a valid out-pointer.
            unsafe {
                WskProviderNpi.write(WSK_PROVIDER_NPI {
                    Client: client,
                    Dispatch: dispatch as *const _,
                });
            };
            Status::SUCCESS.raw()
        }
        Err(status) => status.raw(),
    }
}

/// `WskReleaseProviderNPI`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    let key = WskRegistration as usize;
    state::with(|s| {
        image::driver_calls(s, "WskReleaseProviderNPI");
        s.events.push(Event::WskReleaseProviderNPI);
        match s.wsk_registrations.get_mut(&key) {
            Some(r) if r.captures > 0 => r.captures -= 1,
            _ => s.violation("WskReleaseProviderNPI without a captured NPI".into()),
        }
    });
}

/// `WskDeregister`: waits until every captured NPI is released.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    let key = WskRegistration as usize;
    let known = state::with(|s| {
        image::driver_calls(s, "WskDeregister");
        s.events.push(Event::WskDeregister);
        match s.wsk_registrations.get_mut(&key) {
            Some(r) if !r.deregistered => {
                r.deregistered = true;
                true
            }
            _ => {
                s.violation("WskDeregister on a registration that is not registered".into());
                false
            }
        }
    });
    if known {
        state::wait_until(|s| {
            s.wsk_registrations
                .get(&key)
                .is_none_or(|r| r.captures == 0)
        });
        state::with(|s| {
            s.wsk_registrations.remove(&key);
        });
    }
}
