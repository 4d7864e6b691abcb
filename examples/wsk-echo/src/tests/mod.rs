//! `wsk_echo.sys` against the host model (`crates/wsk-host-model`): its entry points and
//! parameters ([`entry`]), every failure of the failure matrix in turn ([`matrix`]), the bulk
//! mode ([`stream`]) and the latency mode ([`latency`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use wsk_client::sys::{REG_DWORD, REG_SZ};
use wsk_host_model::{Session, reg_sz};

mod entry;
mod latency;
mod matrix;
mod stream;

/// A session for the echo driver, with every rule of the model on (its work items are short: the
/// exchange is a task that awaits its requests).
fn session() -> Session {
    wsk_host_model::session()
}

/// The echo's `Parameters`: `Host`, `Port` and `Message`, with their registry types.
fn set_parameters(s: &Session, host: &str, port: u32, message: &str) {
    s.set_parameter("Parameters", "Host", REG_SZ, &reg_sz(host));
    s.set_parameter("Parameters", "Port", REG_DWORD, &port.to_le_bytes());
    s.set_parameter("Parameters", "Message", REG_SZ, &reg_sz(message));
}
