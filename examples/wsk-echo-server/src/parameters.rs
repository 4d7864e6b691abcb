//! The server's parameters, from its service key's `Parameters` subkey: `Port` (`REG_DWORD`,
//! 1 to 65535, required), `MaxConnections` (`REG_DWORD`, 1 to [`MAX_CONNECTIONS`], default 16)
//! and `Address` (`REG_SZ`, an IPv4 or IPv6 literal; default: every IPv4 address, `0.0.0.0`).
//! Without a `Parameters` key the driver loads and serves nothing (`parameters: no Parameters key
//! (0xC0000034): not serving`: the server is not configured); a missing or malformed value is a
//! failure, logged (`listen failed: parameters 0x<NTSTATUS>`, after a line naming the value), and
//! the driver loads without serving.
//!
//! IRQL: [`read`] at `PASSIVE_LEVEL`.

use core::ffi::CStr;
use core::net::{Ipv4Addr, SocketAddr};

use wsk_client::NtError;
use wsk_client::registry::{RegistryError, ServiceKey};
use wsk_client::resolve::parse_literal;

use crate::WskEchoServer;
pub(crate) use crate::server::MAX_CONNECTIONS;

/// `MaxConnections` when it is not set.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// What the server listens on, and how many connections it serves at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parameters {
    pub(crate) address: SocketAddr,
    pub(crate) max_connections: u32,
}

/// Reads the parameters under `service` (the service key `DriverEntry` got); logs a problem
/// and returns `None`.
pub(crate) fn read(service: ServiceKey<'_>) -> Option<Parameters> {
    let key = match service.parameters() {
        Ok(key) => key,
        Err(RegistryError::NotFound) => {
            let status = RegistryError::NotFound.status();
            wsk_client::info!(
                WskEchoServer,
                "parameters: no Parameters key (0x%08X): not serving",
                status.bits()
            );
            return None;
        }
        Err(error @ RegistryError::ServiceKey(_)) => return refuse(c"the service key", error),
        Err(error) => return refuse(c"Parameters", error),
    };
    let port = match key.dword("Port") {
        Ok(Some(port)) => match u16::try_from(port) {
            Ok(port) if port > 0 => port,
            _ => return refuse(c"Port", RegistryError::Malformed),
        },
        Ok(None) => return refuse(c"Port", RegistryError::NotFound),
        Err(error) => return refuse(c"Port", error),
    };
    let max_connections = match key.dword("MaxConnections") {
        Ok(None) => DEFAULT_MAX_CONNECTIONS,
        Ok(Some(n)) if n >= 1 && n as usize <= MAX_CONNECTIONS => n,
        Ok(Some(_)) => return refuse(c"MaxConnections", RegistryError::Malformed),
        Err(error) => return refuse(c"MaxConnections", error),
    };
    let mut text = [0u8; 64];
    let address = match key.string("Address", &mut text) {
        Ok(None) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        Ok(Some(literal)) => match parse_literal(literal, port) {
            Some(address) => address,
            None => return refuse(c"Address", RegistryError::Malformed),
        },
        Err(error) => return refuse(c"Address", error),
    };
    Some(Parameters {
        address,
        max_connections,
    })
}

/// Logs why the parameters are refused, and the server's result line.
fn refuse(value: &CStr, error: RegistryError) -> Option<Parameters> {
    let status: NtError = error.status();
    let why: &CStr = match error {
        RegistryError::NotFound => c"missing",
        RegistryError::WrongType => c"of the wrong type",
        RegistryError::TooLong => c"too long",
        RegistryError::Malformed => c"out of range or malformed",
        RegistryError::Failed(_) | RegistryError::ServiceKey(_) => c"unreadable",
    };
    wsk_client::warning!(WskEchoServer, "parameters: %s %s", value, why);
    crate::server::log_listen_failed(c"parameters", status);
    None
}
