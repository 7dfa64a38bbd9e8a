//! Every text frame a client sends goes through `ClientFrame::parse`: it must never panic, and
//! what it accepts must be valid by the protocol's own rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::{ClientFrame, MAX_DATA_DEPTH, RoomName, json_depth};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientFrame::parse(text) {
        Ok(ClientFrame::Publish { room, event, data, .. }) => {
            assert!(RoomName::parse(room.as_str()).is_ok());
            assert!(!event.as_str().is_empty());
            assert!(serde_json::from_str::<&serde_json::value::RawValue>(data.get()).is_ok());
            assert!(json_depth(data.get()) <= MAX_DATA_DEPTH);
        }
        Ok(ClientFrame::Subscribe { room, .. } | ClientFrame::Unsubscribe { room, .. }) => {
            assert!(RoomName::parse(room.as_str()).is_ok());
        }
        Ok(ClientFrame::Ping { .. }) => {}
        Err(e) => assert!(!e.message.is_empty()),
    }
});
