//! The model's NMR: the five client functions NETIO.SYS exports, and the provider side.

use std::cell::Cell;

use core::ffi::c_void;

use crate::Status;
use wsk_sys::{
    HANDLE, NPI_CLIENT_CHARACTERISTICS, NPI_REGISTRATION_INSTANCE, NPI_WSK_INTERFACE_ID, NTSTATUS,
    PVOID, WSK_CLIENT_DISPATCH,
};

use super::image::{self, Guard};
use super::state::{self, Binding, BindingState, Client, Event, ProviderConfig, ProviderId};

/// `NmrRegisterClient`: records the client, offers it every registered provider, and only then
/// writes the out-handle (attach may run before NMR has returned it, as on Windows).
///
/// # Safety
/// As the C function: valid characteristics that outlive the registration; a valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrRegisterClient(
    ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS,
    ClientContext: PVOID,
    NmrClientHandle: *mut HANDLE,
) -> NTSTATUS {
    // SAFETY: per the contract.
    let characteristics = unsafe { *ClientCharacteristics };
    let registered = state::with(|s| {
        let injected = image::driver_calls(s, "NmrRegisterClient");
        if let Some(status) = injected.or(s.register_client_failure) {
            s.events.push(Event::NmrRegisterClient { status });
            return Err(status);
        }
        check_client_characteristics(s, &characteristics);
        let handle = s.new_handle();
        s.clients.push(Client {
            handle,
            characteristics,
            context: ClientContext as usize,
            deregistering: false,
        });
        let providers: Vec<ProviderId> = s
            .providers
            .iter()
            .filter(|p| p.registered)
            .map(|p| p.id)
            .collect();
        Ok((handle, providers))
    });
    let (handle, providers) = match registered {
        Ok(registered) => registered,
        Err(status) => return status.raw(),
    };
    for provider in providers {
        offer(handle, provider);
    }
    let null_handle = state::with(|s| {
        s.events.push(Event::NmrRegisterClient {
            status: Status::SUCCESS,
        });
        s.register_client_null_handle
    });
    let out = if null_handle {
        std::ptr::null_mut()
    } else {
        handle as HANDLE
    };
    // SAFETY: per the contract.
    unsafe { NmrClientHandle.write(out) };
    Status::SUCCESS.raw()
}

fn check_client_characteristics(s: &mut state::State, c: &NPI_CLIENT_CHARACTERISTICS) {
    let instance = &c.ClientRegistrationInstance;
    if usize::from(c.Length) != size_of::<NPI_CLIENT_CHARACTERISTICS>()
        || usize::from(instance.Size) != size_of::<NPI_REGISTRATION_INSTANCE>()
        || c.Version != 0
        || instance.Version != 0
    {
        s.violation("client characteristics: wrong Version/Length/Size".into());
    }
    if c.ClientAttachProvider.is_none() || c.ClientDetachProvider.is_none() {
        s.violation("client characteristics: missing attach or detach callback".into());
    }
    // SAFETY: the characteristics point at the client's statics.
    if unsafe { instance.NpiId.as_ref() } != Some(&NPI_WSK_INTERFACE_ID) {
        s.violation("client registration instance: NpiId is not NPI_WSK_INTERFACE_ID".into());
    }
    // SAFETY: a non-NULL ModuleId points at the client's module id.
    match unsafe { instance.ModuleId.as_ref() } {
        None => s.violation("client registration instance: NULL ModuleId".into()),
        Some(module_id) if module_id.Type != wsk_sys::MIT_GUID => {
            s.violation("client module id: Type is not MIT_GUID".into());
        }
        Some(_) => {}
    }
}

std::thread_local! {
    /// The binding whose NMR callback (attach, detach, cleanup) this thread is inside.
    static CALLBACK: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Whether the calling thread is inside one of the client's NMR callbacks (for a test's check
/// that code of its own runs outside them).
pub(crate) fn inside_callback() -> bool {
    CALLBACK.with(Cell::get).is_some()
}

/// Runs `f`, the client's NMR callback `name` for `binding`, at the IRQL the session gives it.
fn in_callback<R>(binding: usize, name: &'static str, f: impl FnOnce() -> R) -> R {
    let irql = state::with(|s| {
        s.nmr_callbacks_running += 1;
        crate::irql::callback(s, name)
    });
    let outer = CALLBACK.with(|c| c.replace(Some(binding)));
    let result = crate::irql::at(irql, f);
    CALLBACK.with(|c| c.set(outer));
    state::with(|s| s.nmr_callbacks_running -= 1);
    result
}

/// Calls the client's `ClientAttachProvider` for one provider and records the outcome.
fn offer(client: usize, provider: ProviderId) {
    let Some((binding, attach, context, instance)) = state::with(|s| {
        let c = s.client(client)?;
        let attach = c.characteristics.ClientAttachProvider?;
        let context = c.context;
        let instance = &raw const s.provider(provider)?.memory.instance;
        let binding = s.new_handle();
        s.bindings.push(Binding {
            handle: binding,
            client,
            provider,
            state: BindingState::Offered,
            client_binding_context: 0,
            completed: false,
        });
        Some((binding, attach, context, instance))
    }) else {
        return;
    };
    // SAFETY: the client's own callback, with a fresh binding handle, its context and a
    // registration instance that lives as long as the session.
    let status = Status::from_raw(in_callback(binding, "ClientAttachProvider", || unsafe {
        attach(binding as HANDLE, context as PVOID, instance)
    }));
    state::with(|s| {
        s.events.push(Event::ClientAttachProvider {
            binding,
            provider,
            status,
        });
        let state = s.binding(binding).map(|b| b.state);
        match (status == Status::SUCCESS, state) {
            (true, Some(BindingState::Offered)) => s.violation(format!(
                "ClientAttachProvider returned success without a successful NmrClientAttachProvider (binding {binding:#x})"
            )),
            (false, Some(BindingState::Offered)) => s.bindings.retain(|b| b.handle != binding),
            (false, Some(state)) => s.violation(format!(
                "ClientAttachProvider failed with {status:?} after NMR accepted the binding ({state:?})"
            )),
            // Success with the binding attached, or already detached and cleaned up.
            (true, _) | (false, None) => {}
        }
    });
}

/// `NmrClientAttachProvider`: answers as the provider's script says; on success writes the
/// provider's `WSK_CLIENT` and dispatch into the client's out-pointers.
///
/// # Safety
/// As the C function: a binding handle NMR passed to the running attach, a valid client
/// dispatch, valid out-pointers.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrClientAttachProvider(
    NmrBindingHandle: HANDLE,
    ClientBindingContext: PVOID,
    ClientDispatch: *const c_void,
    ProviderBindingContext: *mut PVOID,
    ProviderDispatch: *mut *const c_void,
) -> NTSTATUS {
    let binding = NmrBindingHandle as usize;
    // SAFETY: per the contract, a WSK client dispatch.
    let version = unsafe { (*ClientDispatch.cast::<WSK_CLIENT_DISPATCH>()).Version };
    let answer = state::with(|s| {
        let injected = image::driver_calls(s, "NmrClientAttachProvider");
        let Some(b) = s.bindings.iter().find(|b| b.handle == binding) else {
            s.violation(format!(
                "NmrClientAttachProvider: unknown binding {binding:#x}"
            ));
            return None;
        };
        if b.state != BindingState::Offered {
            let state = b.state;
            s.violation(format!(
                "NmrClientAttachProvider on binding {binding:#x} in state {state:?}"
            ));
            return None;
        }
        let provider = b.provider;
        let p = s.provider_mut(provider)?;
        let status = injected.unwrap_or_else(|| p.config.answer_for(version));
        let detach_now = p.config.detach_during_attach;
        let hook = p.config.during_attach.clone();
        let outs = if status == Status::SUCCESS {
            p.memory.dispatch.Version = version;
            let dispatch = if p.config.null_dispatch {
                std::ptr::null()
            } else {
                (&raw const p.memory.dispatch).cast::<c_void>()
            };
            Some((p.memory.wsk_client, dispatch as usize))
        } else {
            None
        };
        if outs.is_some()
            && let Some(b) = s.binding(binding)
        {
            b.state = BindingState::Attached;
            b.client_binding_context = ClientBindingContext as usize;
        }
        s.events.push(Event::NmrClientAttachProvider {
            binding,
            version,
            status,
        });
        Some((status, outs, detach_now, hook))
    });
    let Some((status, outs, detach_now, hook)) = answer else {
        return Status::INVALID_PARAMETER.raw();
    };
    if let Some((wsk_client, dispatch)) = outs {
        // SAFETY: per the contract, valid out-pointers.
        unsafe { ProviderBindingContext.write(wsk_client) };
        // SAFETY: as above.
        unsafe { ProviderDispatch.write(dispatch as *const c_void) };
        if detach_now {
            detach(binding);
        }
    }
    if let Some(hook) = hook {
        (hook.0)();
    }
    status.raw()
}

/// Detaches one attached binding: calls `ClientDetachProvider`, and cleanup at once when it
/// returns `STATUS_SUCCESS`. Returns the detach status.
fn detach(binding: usize) -> Option<Status> {
    let (detach, context) = state::with(|s| {
        let client_of = s.binding(binding).map(|b| b.client)?;
        let callback = s.client(client_of)?.characteristics.ClientDetachProvider?;
        let b = s.binding(binding)?;
        (b.state == BindingState::Attached).then(|| {
            b.state = BindingState::Detaching;
            (callback, b.client_binding_context)
        })
    })?;
    let status = Status::from_raw(image::run(Guard::Caller, || {
        in_callback(binding, "ClientDetachProvider", || {
            // SAFETY: the client's own callback with the context it gave NmrClientAttachProvider.
            unsafe { detach(context as PVOID) }
        })
    }));
    let cleanup_now = state::with(|s| {
        s.events
            .push(Event::ClientDetachProvider { binding, status });
        let Some(b) = s.binding(binding) else {
            return false;
        };
        let completed = b.completed;
        match status {
            Status::SUCCESS => {
                b.state = BindingState::CleaningUp;
                if completed {
                    s.violation(format!(
                        "binding {binding:#x}: detach completed and also returned STATUS_SUCCESS"
                    ));
                }
                true
            }
            Status::PENDING if completed => {
                // The last call in flight completed the detach before detach returned.
                b.state = BindingState::CleaningUp;
                true
            }
            Status::PENDING => {
                b.state = BindingState::DetachPending;
                false
            }
            other => {
                b.state = BindingState::CleaningUp;
                s.violation(format!(
                    "ClientDetachProvider returned {other:?}: only STATUS_SUCCESS or \
                     STATUS_PENDING are defined (NPI_CLIENT_DETACH_PROVIDER_FN)"
                ));
                true
            }
        }
    });
    if cleanup_now {
        cleanup(binding);
    }
    Some(status)
}

/// Calls `ClientCleanupBindingContext` and forgets the binding — once the provider side has
/// detached too, which the WSK subsystem does only when the client has closed every socket it
/// opened through the binding ("Unregistering and Unloading the WSK Client").
fn cleanup(binding: usize) {
    let provider = state::with(|s| s.binding(binding).map(|b| b.provider));
    if let Some(provider) = provider {
        wait_for_sockets(provider);
    }
    let callback = state::with(|s| {
        let b = s.bindings.iter().find(|b| b.handle == binding)?;
        let context = b.client_binding_context;
        let cleanup = s
            .client(b.client)?
            .characteristics
            .ClientCleanupBindingContext?;
        Some((cleanup, context))
    });
    if let Some((cleanup, context)) = callback {
        image::run(Guard::Caller, || {
            in_callback(binding, "ClientCleanupBindingContext", || {
                // SAFETY: the client's own callback, once, after its detach completed.
                unsafe { cleanup(context as PVOID) };
            });
        });
    }
    state::with(|s| {
        s.events
            .push(Event::ClientCleanupBindingContext { binding });
        s.bindings.retain(|b| b.handle != binding);
    });
}

/// `NmrClientDetachProviderComplete`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE) {
    let binding = NmrBindingHandle as usize;
    if CALLBACK.with(Cell::get) != Some(binding) {
        // From another thread while ClientDetachProvider runs: NMR takes the completion once the
        // callback has returned (and says whether it pended); the model waits for that.
        let _ = state::wait_for(crate::WAIT_LIMIT, |s| {
            s.binding(binding)
                .is_none_or(|b| b.state != BindingState::Detaching)
        });
    }
    let cleanup_now = state::with(|s| {
        image::driver_calls(s, "NmrClientDetachProviderComplete");
        let already = s.binding(binding).is_some_and(|b| b.completed);
        let returned_success = s.events.iter().any(|e| {
            *e == Event::ClientDetachProvider {
                binding,
                status: Status::SUCCESS,
            }
        });
        if let Some(b) = s.binding(binding) {
            b.completed = true;
        }
        s.events
            .push(Event::NmrClientDetachProviderComplete { binding });
        let state = s.binding(binding).map(|b| b.state);
        match state {
            _ if already => {
                s.violation(format!("binding {binding:#x}: detach completed twice"));
                false
            }
            Some(BindingState::DetachPending) => {
                if let Some(b) = s.binding(binding) {
                    b.state = BindingState::CleaningUp;
                }
                true
            }
            // Completed inside ClientDetachProvider (its own thread: the call has not returned,
            // let alone with STATUS_PENDING). detach() cleans up when it sees the completion.
            Some(BindingState::Detaching) => {
                s.violation(format!(
                    "binding {binding:#x}: NmrClientDetachProviderComplete inside \
                     ClientDetachProvider (only after it returned STATUS_PENDING: \
                     NPI_CLIENT_DETACH_PROVIDER_FN)"
                ));
                false
            }
            // Its detach is over (perhaps cleaned up and forgotten): nothing was pending.
            _ if returned_success => {
                s.violation(format!(
                    "NmrClientDetachProviderComplete on binding {binding:#x}, whose \
                     ClientDetachProvider returned STATUS_SUCCESS (only after it returned \
                     STATUS_PENDING: NPI_CLIENT_DETACH_PROVIDER_FN)"
                ));
                false
            }
            other => {
                s.violation(format!(
                    "NmrClientDetachProviderComplete on binding {binding:#x} in state {other:?}"
                ));
                false
            }
        }
    });
    if cleanup_now {
        cleanup(binding);
    }
    image::preempt_after_wake_up();
}

/// `NmrDeregisterClient`: detaches every binding of the client; returns `STATUS_PENDING`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS {
    let client = NmrClientHandle as usize;
    let bindings = state::with(|s| {
        let injected = image::driver_calls(s, "NmrDeregisterClient");
        let Some(c) = s.clients.iter_mut().find(|c| c.handle == client) else {
            s.violation(format!("NmrDeregisterClient: unknown client {client:#x}"));
            return None;
        };
        if let Some(status) = injected {
            // An injected failure: nothing deregisters.
            s.events.push(Event::NmrDeregisterClient { status });
            return Some(Err(status));
        }
        if c.deregistering {
            s.violation(format!("NmrDeregisterClient twice for {client:#x}"));
            return None;
        }
        c.deregistering = true;
        let status = if s.deregister_client_returns_success {
            Status::SUCCESS
        } else {
            Status::PENDING
        };
        s.events.push(Event::NmrDeregisterClient { status });
        Some(Ok(s
            .bindings
            .iter()
            .filter(|b| b.client == client && b.state == BindingState::Attached)
            .map(|b| b.handle)
            .collect::<Vec<_>>()))
    });
    let bindings = match bindings {
        Some(Ok(bindings)) => bindings,
        Some(Err(status)) => return status.raw(),
        None => return Status::INVALID_PARAMETER.raw(),
    };
    for binding in bindings {
        detach(binding);
    }
    // Either way deregistration may still be under way (a detach pending): a client must wait.
    if state::with(|s| s.deregister_client_returns_success) {
        Status::SUCCESS.raw()
    } else {
        Status::PENDING.raw()
    }
}

/// `NmrWaitForClientDeregisterComplete`: waits until every binding of the client is cleaned up.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrWaitForClientDeregisterComplete(
    NmrClientHandle: HANDLE,
) -> NTSTATUS {
    let client = NmrClientHandle as usize;
    let known = state::with(|s| {
        let injected = image::driver_calls(s, "NmrWaitForClientDeregisterComplete");
        (s.client(client).is_some_and(|c| c.deregistering), injected)
    });
    // An injected failure: answered after the deregistration completed (the client's bindings are
    // idle at unload, so it completed inside NmrDeregisterClient).
    let known = match known {
        (true, Some(status)) => {
            let done = state::wait_until(|s| !s.bindings.iter().any(|b| b.client == client));
            state::with(|s| {
                if done {
                    s.clients.retain(|c| c.handle != client);
                }
                s.events
                    .push(Event::NmrWaitForClientDeregisterComplete { status });
            });
            return status.raw();
        }
        (known, _) => known,
    };
    if !known {
        state::with(|s| {
            s.violation(format!(
                "NmrWaitForClientDeregisterComplete: {client:#x} is not deregistering"
            ));
        });
        return Status::INVALID_PARAMETER.raw();
    }
    let done = state::wait_until(|s| !s.bindings.iter().any(|b| b.client == client));
    let status = if done {
        Status::SUCCESS
    } else {
        Status::UNSUCCESSFUL
    };
    state::with(|s| {
        s.clients.retain(|c| c.handle != client);
        s.events
            .push(Event::NmrWaitForClientDeregisterComplete { status });
    });
    status.raw()
}

/// A provider registers: it is offered to every client that is not deregistering.
pub(crate) fn register_provider(config: ProviderConfig) -> ProviderId {
    let (id, clients) = state::with(|s| {
        let id = ProviderId(s.providers.len() + 1);
        let memory = state::new_provider_memory(&config, id);
        s.providers.push(state::Provider {
            id,
            config,
            registered: true,
            memory,
        });
        let clients: Vec<usize> = s
            .clients
            .iter()
            .filter(|c| !c.deregistering)
            .map(|c| c.handle)
            .collect();
        (id, clients)
    });
    for client in clients {
        offer(client, id);
    }
    id
}

/// Every client still registered, as the model knows them (by handle, whether the client ever
/// saw it or not).
pub(crate) fn registered_clients() -> Vec<usize> {
    state::with(|s| s.clients.iter().map(|c| c.handle).collect())
}

/// Deregisters a client the driver cannot deregister itself (it never got its handle), as a
/// system shutdown would: for tests that leave one behind on purpose.
pub(crate) fn deregister_stuck_client(client: usize) {
    // SAFETY: a client handle the model handed out.
    let status = unsafe { NmrDeregisterClient(client as HANDLE) };
    if Status::from_raw(status) == Status::PENDING {
        // SAFETY: as above, deregistering.
        let _ = unsafe { NmrWaitForClientDeregisterComplete(client as HANDLE) };
    }
}

/// A provider deregisters: every binding of it is detached.
pub(crate) fn deregister_provider(provider: ProviderId) -> Vec<Status> {
    let bindings = state::with(|s| {
        if let Some(p) = s.provider_mut(provider) {
            p.registered = false;
        }
        s.bindings
            .iter()
            .filter(|b| b.provider == provider && b.state == BindingState::Attached)
            .map(|b| b.handle)
            .collect::<Vec<_>>()
    });
    bindings.into_iter().filter_map(detach).collect()
}

/// The provider's detach waits until the client closed every socket it made through `provider`;
/// a client that never does hangs its unload (recorded).
pub(crate) fn wait_for_sockets(provider: ProviderId) {
    // Shorter than the model's general limit: a test that shows this hang should not take long.
    const SOCKET_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let closed = state::wait_for(SOCKET_WAIT, |s| {
        !s.peers.values().any(|k| k.provider == provider)
    });
    if !closed {
        state::with(|s| {
            let open = s.peers.values().filter(|k| k.provider == provider).count();
            s.violation(format!(
                "the provider's detach waited {SOCKET_WAIT:?} for {open} socket(s) the client never closed: an unload hangs here"
            ));
            s.peers.retain(|_, k| k.provider != provider);
        });
    }
}
