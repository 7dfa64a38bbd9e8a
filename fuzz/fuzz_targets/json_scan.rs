//! The byte scanners that check event data (`json_depth`, `compact_json`) against serde_json:
//! for any text serde_json accepts, the compacted text must be the same JSON and the depth must
//! match the real nesting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::{compact_json, json_depth};
use serde_json::Value;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = serde_json::from_str::<&serde_json::value::RawValue>(text) else { return };
    let compact = compact_json(raw.get());
    assert!(serde_json::from_str::<&serde_json::value::RawValue>(&compact).is_ok(), "{compact:?}");
    if let Ok(value) = serde_json::from_str::<Value>(raw.get()) {
        assert_eq!(serde_json::from_str::<Value>(&compact).ok(), Some(value.clone()));
        assert_eq!(json_depth(raw.get()), depth(&value));
    }
});
