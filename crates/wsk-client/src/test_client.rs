//! A client for the crate's unit tests.

use crate::binding::BindingSlot;
use crate::{Client, ClientState, PoolTag, WskVersion, guid};

pub(crate) struct TestClient;

static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();

impl Client for TestClient {
    const NAME: &'static core::ffi::CStr = c"unit_test";
    const MODULE_ID: crate::sys::GUID = guid(0x7E57_0000_0000_0000_0000_0000_0000_0001);
    const POOL_TAG: PoolTag = PoolTag::new(*b"WskT");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
    fn state() -> &'static ClientState {
        &STATE
    }
}
