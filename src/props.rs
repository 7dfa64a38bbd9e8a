//! Property tests (proptest) of the parsers every untrusted string goes through: room, event and
//! app names, room patterns and their wildcard matching, Origin matching, client frames, the
//! JSON scanners and API key parsing.

use proptest::prelude::*;
use serde_json::Value;

use crate::apps::check_app_id;
use crate::auth::api_key::PresentedKey;
use crate::protocol::{ClientFrame, EventName, RoomName, RoomPattern, compact_json, json_depth};
use crate::session::origin_allowed;

fn is_room_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@,.;:".contains(c)
}

/// Arbitrary JSON values of bounded depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
        "[\"\\\\ \\[\\]{}]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn room_names_accept_exactly_the_documented_set(s in "\\PC{0,170}|[A-Za-z0-9_\\-=@,.;:*]{0,170}") {
        let expected = !s.is_empty() && s.len() <= 164 && s.chars().all(is_room_char);
        prop_assert_eq!(RoomName::parse(&s).is_ok(), expected, "{:?}", s);
    }

    #[test]
    fn event_names_accept_exactly_the_documented_set(s in "\\PC{0,210}|roomcast:\\PC{0,5}|[\\x00-\\x1f a]{1,4}") {
        let n = s.chars().count();
        let expected = (1..=200).contains(&n) && !s.chars().any(char::is_control) && !s.starts_with("roomcast:");
        prop_assert_eq!(EventName::parse(&s).is_ok(), expected, "{:?}", s);
    }

    #[test]
    fn app_ids_accept_exactly_the_documented_set(s in "\\PC{0,70}|[a-z0-9\\-]{0,70}|[A-Za-z0-9\\-_]{2,66}") {
        let b = s.as_bytes();
        let expected = (3..=64).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        prop_assert_eq!(check_app_id(&s).is_ok(), expected, "{:?}", s);
    }

    #[test]
    fn a_prefix_pattern_grants_exactly_the_rooms_it_prefixes(
        prefix in "(private-)?[A-Za-z0-9_\\-=@,.;:]{0,12}",
        room in "(private-)?[A-Za-z0-9_\\-=@,.;:]{1,24}",
    ) {
        let room = RoomName::parse(&room).unwrap();
        let with_star = format!("{prefix}*");
        let pattern = RoomPattern::parse(&with_star).unwrap();
        let private_ok = !room.as_str().starts_with("private-") || prefix.starts_with("private-");
        prop_assert_eq!(pattern.allows(&room), room.as_str().starts_with(&prefix) && private_ok);
        // Grafting the prefix on always matches (unless private rules say no).
        let grafted = RoomName::parse(&format!("{prefix}{}", room.as_str())).unwrap();
        let private_ok = !grafted.as_str().starts_with("private-") || prefix.starts_with("private-");
        prop_assert_eq!(pattern.allows(&grafted), private_ok);
    }

    #[test]
    fn an_exact_pattern_grants_one_room(a in "[A-Za-z0-9_\\-=@,.;:]{1,20}", b in "[A-Za-z0-9_\\-=@,.;:]{1,20}") {
        let pattern = RoomPattern::parse(&a).unwrap();
        let room_a = RoomName::parse(&a).unwrap();
        let room_b = RoomName::parse(&b).unwrap();
        prop_assert!(pattern.allows(&room_a));
        prop_assert_eq!(pattern.allows(&room_b), a == b);
    }

    #[test]
    fn no_pattern_without_the_private_prefix_opens_a_private_room(
        pattern in "[A-Za-z0-9_\\-=@,.;:]{0,10}\\*?",
        rest in "[A-Za-z0-9_\\-=@,.;:]{1,10}",
    ) {
        prop_assume!(!pattern.starts_with("private-") && !pattern.is_empty());
        if let Ok(p) = RoomPattern::parse(&pattern) {
            let room = RoomName::parse(&format!("private-{rest}")).unwrap();
            prop_assert!(!p.allows(&room));
        }
    }

    #[test]
    fn patterns_with_a_star_anywhere_but_the_end_are_refused(a in "[A-Za-z0-9_\\-=@,.;:]{0,8}", b in "[A-Za-z0-9_\\-=@,.;:]{1,8}") {
        let inner_star = format!("{a}*{b}");
        let double_star = format!("{a}**");
        prop_assert!(RoomPattern::parse(&inner_star).is_err());
        prop_assert!(RoomPattern::parse(&double_star).is_err());
    }

    #[test]
    fn wildcard_origins_match_subdomains_only(
        sub in "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}",
        parent in "[a-z0-9]{1,8}\\.[a-z]{2,4}",
        other in "[a-z0-9]{1,8}",
        port in proptest::option::of(1u16..),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let allowed = vec![format!("*.{parent}")];
        let child = format!("https://{sub}.{parent}{port}");
        let itself = format!("https://{parent}{port}");
        let glued = format!("https://{other}{parent}");
        let suffixed = format!("https://{sub}.{parent}.{other}");
        prop_assert!(origin_allowed(&child, &allowed));
        prop_assert!(!origin_allowed(&itself, &allowed));
        prop_assert!(!origin_allowed(&glued, &allowed));
        prop_assert!(!origin_allowed(&suffixed, &allowed));
        let exact = vec![parent.clone()];
        prop_assert!(origin_allowed(&itself, &exact));
        prop_assert!(!origin_allowed(&child, &exact));
    }

    #[test]
    fn client_frame_parsing_never_panics(s in "\\PC{0,200}") {
        let _ = ClientFrame::parse(&s);
    }

    #[test]
    fn subscribe_frames_round_trip(room in "[A-Za-z0-9_\\-=@,.;:]{1,40}", id in proptest::option::of(any::<u64>())) {
        let text = serde_json::json!({"type": "subscribe", "room": room, "id": id}).to_string();
        match ClientFrame::parse(&text) {
            Ok(ClientFrame::Subscribe { room: got, id: got_id, .. }) => {
                prop_assert_eq!(got.as_str(), room.as_str());
                prop_assert_eq!(got_id, id);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn the_json_scanners_agree_with_serde_json(v in json_value()) {
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        prop_assert_eq!(compact_json(&pretty), serde_json::to_string(&v).unwrap());
        prop_assert_eq!(json_depth(&pretty), depth(&v));
    }

    #[test]
    fn key_parsing_never_panics_and_round_trips(s in "\\PC{0,80}|rc_(app|admin)_[A-Za-z0-9]{12}_[A-Za-z0-9]{32}") {
        if let Some(key) = PresentedKey::parse(&s) {
            prop_assert_eq!(key.plaintext(), s);
        }
    }
}
