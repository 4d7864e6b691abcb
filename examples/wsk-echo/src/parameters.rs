//! The echo driver's parameters, from its service key's `Parameters` subkey (`Host`, `Port`,
//! `Message`, and the optional `Bytes` and `RoundTrips`; parsed by [`crate::values`]). A missing
//! or malformed value is logged and the driver still loads (it then echoes nothing); `Bytes` and
//! `RoundTrips` may be absent (one message is echoed), but when present each must be
//! well-formed, and not both.
//!
//! IRQL: [`read`] at `PASSIVE_LEVEL` (`ZwOpenKey`, `ZwQueryValueKey`).

use wsk_client::registry::{RegistryError, ServiceKey};

use crate::WskEcho;
use crate::values::{MAX_MESSAGE, Parameters, Problem};

/// Reads the parameters under `service` (the service key `DriverEntry` got). Logs a problem and
/// returns `None`.
///
/// IRQL: `PASSIVE_LEVEL`.
pub fn read(service: ServiceKey<'_>) -> Option<Parameters> {
    let result = read_values(service);
    match result {
        Ok(parameters) => Some(parameters),
        Err(Problem::Missing(name, status)) if name == c"Parameters" => {
            // No Parameters key: the usual configuration of a driver with nothing to echo.
            wsk_client::info!(
                WskEcho,
                "parameters: no Parameters key (0x%08X): no echo",
                status.bits()
            );
            None
        }
        Err(Problem::Missing(name, status)) => {
            wsk_client::warning!(
                WskEcho,
                "parameters: %s missing (0x%08X): no echo",
                name,
                status.bits()
            );
            None
        }
        Err(Problem::Malformed(name)) => {
            wsk_client::warning!(WskEcho, "parameters: %s malformed: no echo", name);
            None
        }
    }
}

fn read_values(service: ServiceKey<'_>) -> Result<Parameters, Problem> {
    let key = service.parameters().map_err(problem(c"Parameters"))?;
    let mut p = Parameters::EMPTY;
    // One buffer for the strings, one after the other (a kernel stack is small).
    let mut text = [0u8; MAX_MESSAGE];
    let host = key.string("Host", &mut text).map_err(problem(c"Host"))?;
    p.set_host(host.ok_or_else(|| missing(c"Host"))?)?;
    let port = key.dword("Port").map_err(problem(c"Port"))?;
    p.set_port(port.ok_or_else(|| missing(c"Port"))?)?;
    let message = key
        .string("Message", &mut text)
        .map_err(problem(c"Message"))?;
    p.set_message(message.ok_or_else(|| missing(c"Message"))?)?;
    // Optional: absent, one message; present, it must be a good REG_DWORD.
    if let Some(bytes) = key.dword("Bytes").map_err(problem(c"Bytes"))? {
        p.set_bytes(bytes)?;
    }
    if let Some(count) = key.dword("RoundTrips").map_err(problem(c"RoundTrips"))? {
        p.set_round_trips(count)?;
    }
    Ok(p)
}

/// `name` is not there.
fn missing(name: &'static core::ffi::CStr) -> Problem {
    Problem::Missing(name, RegistryError::NotFound.status())
}

/// A closure for `map_err`: what the registry said of `name`, as the problem logged.
fn problem(name: &'static core::ffi::CStr) -> impl Fn(RegistryError) -> Problem {
    move |error| match error {
        RegistryError::ServiceKey(status) => Problem::Missing(c"the service key", status),
        RegistryError::NotFound | RegistryError::Failed(_) => {
            Problem::Missing(name, error.status())
        }
        RegistryError::WrongType | RegistryError::TooLong | RegistryError::Malformed => {
            Problem::Malformed(name)
        }
    }
}
