//! Room, event and app names, room patterns with their wildcard matching, and Origin matching:
//! no panic on any input, and the documented rules hold for whatever is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::apps::check_app_id;
use roomcast::protocol::{EventName, RoomName, RoomPattern};
use roomcast::session::origin_allowed;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The input is split in two: a pattern or an allow-list entry, and a name or an Origin.
    let (left, right) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(room) = RoomName::parse(right) {
        assert!(room.as_str().len() <= 164);
        if let Ok(pattern) = RoomPattern::parse(left) {
            let allowed = pattern.allows(&room);
            if room.as_str().starts_with("private-") && allowed {
                assert!(left.starts_with("private-"), "{left:?} opened {right:?}");
            }
            if allowed && !left.ends_with('*') {
                assert_eq!(left, right);
            }
        }
    }
    if let Ok(event) = EventName::parse(right) {
        assert!(!event.as_str().starts_with("roomcast:"));
        assert!(!event.as_str().chars().any(char::is_control));
    }
    if check_app_id(right).is_ok() {
        assert!(right.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }
    let list = vec![left.to_owned()];
    let _ = origin_allowed(right, &list);
    if origin_allowed(right, &list) && left.starts_with("*.") {
        assert!(right.to_ascii_lowercase().contains(&left[1..].to_ascii_lowercase()));
    }
});
