//! The wire: validated names, client frames, server frames and close codes (DESIGN §4, §10).
//! Names are checked once here, where bytes enter; inner code takes the newtypes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::domain::{
    EventName, MAX_EVENT_LEN, MAX_ROOM_LEN, Member, RESERVED_EVENT_PREFIX, RoomGrants, RoomName, RoomPattern,
};

/// Deepest nesting of arrays and objects accepted in event `data`: what common JSON parsers
/// (serde_json, Python's `json`) handle without hitting their recursion limits, so no
/// subscriber or webhook receiver is handed a document it cannot read.
pub const MAX_DATA_DEPTH: usize = 128;

/// The deepest nesting of arrays and objects in `raw`, which must be valid JSON (a
/// [`RawValue`]'s text). One pass over the bytes, no recursion.
pub fn json_depth(raw: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `raw` (valid JSON) without the whitespace between tokens; numbers and strings are kept
/// byte for byte.
pub fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// Where a recovering client left a room: `{"offset", "epoch"}` of a subscribe's `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// Longest epoch a client may send back.
const MAX_EPOCH_LEN: usize = 64;

impl Since {
    /// Checks a `since` value: `{"offset": <integer ≥ 0>, "epoch": "<1–64 visible characters>"}`.
    fn parse(value: &serde_json::Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("since must be an object with offset and epoch")?;
        if let Some(other) = object.keys().find(|k| *k != "offset" && *k != "epoch") {
            return Err(format!("since has an unknown field {other:?}"));
        }
        let offset = object
            .get("offset")
            .and_then(serde_json::Value::as_u64)
            .ok_or("since.offset must be a non-negative integer")?;
        let epoch =
            object.get("epoch").and_then(serde_json::Value::as_str).ok_or("since.epoch must be a string")?;
        if epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN || !epoch.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("since.epoch must be 1 to {MAX_EPOCH_LEN} visible ASCII characters"));
        }
        Ok(Self { offset, epoch: epoch.to_owned() })
    }
}

/// Where a `subscribed` frame says the room's stream stands, and how a recovery went.
#[derive(Debug, Clone, Copy)]
pub struct StreamAck<'a> {
    pub offset: u64,
    pub epoch: &'a str,
    /// Set when the subscribe asked to recover.
    pub recovered: Option<bool>,
    /// Why nothing was replayed.
    pub reason: Option<&'static str>,
}

/// A frame from a client, validated.
#[derive(Debug)]
pub enum ClientFrame {
    Subscribe { room: RoomName, id: Option<u64>, since: Option<Since> },
    Unsubscribe { room: RoomName, id: Option<u64> },
    Publish { room: RoomName, event: EventName, data: Box<RawValue>, id: Option<u64> },
    Ping { id: Option<u64> },
}

/// Why a client frame was refused; `id` is echoed when it could be read. `detail` is for the
/// server log: the client gets the code's fixed message.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub detail: String,
    pub id: Option<u64>,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    id: Option<serde_json::Value>,
    room: Option<serde_json::Value>,
    event: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    since: Option<serde_json::Value>,
}

impl ClientFrame {
    /// The `id` the frame carried, for echoing.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientFrame::Subscribe { id, .. }
            | ClientFrame::Unsubscribe { id, .. }
            | ClientFrame::Publish { id, .. }
            | ClientFrame::Ping { id } => *id,
        }
    }

    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| FrameError {
            code: ErrorCode::InvalidMessage,
            detail: format!("frame is not a JSON object of the protocol: {e}"),
            id: None,
        })?;
        let id = match raw.id {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| FrameError {
                code: ErrorCode::InvalidMessage,
                detail: "id must be a non-negative integer".into(),
                id: None,
            })?),
        };
        let fail = |code, detail: String| FrameError { code, detail, id };
        let room = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(s)) => {
                RoomName::parse(&s).map_err(|e| fail(ErrorCode::InvalidRoom, format!("room {e}")))
            }
            Some(_) => Err(fail(ErrorCode::InvalidRoom, "room must be a string".into())),
            None => Err(fail(ErrorCode::InvalidRoom, "room is required".into())),
        };
        match raw.kind.as_deref() {
            Some("subscribe") => {
                let room = room(raw.room)?;
                let since = match &raw.since {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(Since::parse(v).map_err(|e| fail(ErrorCode::InvalidMessage, e))?),
                };
                Ok(ClientFrame::Subscribe { room, id, since })
            }
            Some("unsubscribe") => Ok(ClientFrame::Unsubscribe { room: room(raw.room)?, id }),
            Some("ping") => Ok(ClientFrame::Ping { id }),
            Some("publish") => {
                let room = room(raw.room)?;
                let event = match raw.event {
                    Some(serde_json::Value::String(s)) => EventName::parse(&s)
                        .map_err(|e| fail(ErrorCode::InvalidMessage, format!("event {e}")))?,
                    _ => {
                        return Err(fail(ErrorCode::InvalidMessage, "event must be a string".into()));
                    }
                };
                let data = match raw.data {
                    Some(d) if json_depth(d.get()) > MAX_DATA_DEPTH => {
                        return Err(fail(
                            ErrorCode::InvalidMessage,
                            format!("data is nested deeper than {MAX_DATA_DEPTH} levels"),
                        ));
                    }
                    Some(d) => d.to_owned(),
                    None => RawValue::NULL.to_owned(),
                };
                Ok(ClientFrame::Publish { room, event, data, id })
            }
            Some(other) => Err(fail(
                ErrorCode::InvalidMessage,
                format!("unknown type {other:?}; expected subscribe, unsubscribe, publish or ping"),
            )),
            None => Err(fail(ErrorCode::InvalidMessage, "type is required".into())),
        }
    }
}

/// Codes of `error` frames (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Unparseable, binary, or of an unknown `type`.
    InvalidMessage,
    /// The room name breaks the naming rules.
    InvalidRoom,
    /// The token does not grant the room.
    RoomForbidden,
    /// The connection is in `limits.max_rooms_per_connection` rooms already.
    TooManyRooms,
    /// Unsubscribe from, or publish to, a room the connection is not in.
    NotSubscribed,
    /// The app or the token does not allow client events.
    ClientEventsDisabled,
    /// A presence room needs a `user_id` in the token.
    UserIdRequired,
    /// Too many client frames.
    RateLimited,
    /// The broker cannot be reached right now; retrying later is safe.
    Unavailable,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RoomForbidden => "room_forbidden",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::ClientEventsDisabled => "client_events_disabled",
            ErrorCode::UserIdRequired => "user_id_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The message every error frame with this code carries. It is fixed: what exactly went
    /// wrong (a parser's complaint, a broker's error) goes to the server log, never to clients.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => {
                "the frame is not a valid message of the protocol (JSON text with a known type and valid fields)"
            }
            ErrorCode::InvalidRoom => {
                "the room name is missing or invalid (1-164 characters of A-Za-z0-9_-=@,.;:)"
            }
            ErrorCode::RoomForbidden => "the token does not grant this room",
            ErrorCode::TooManyRooms => "the connection is in as many rooms as it may join",
            ErrorCode::NotSubscribed => "the connection is not subscribed to this room",
            ErrorCode::ClientEventsDisabled => "client events are not enabled for this app or token",
            ErrorCode::UserIdRequired => "presence rooms need a user_id in the token",
            ErrorCode::RateLimited => "too many messages; slow down",
            ErrorCode::Unavailable => "the hub cannot do this right now; retrying later is safe",
        }
    }
}

/// Close codes the server sends, each with its meaning for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal,
    /// 1002: a frame that breaks the WebSocket protocol (unmasked, reserved bits, bad opcode).
    ProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1009: a frame over `limits.max_message_bytes`. Do not resend it.
    MessageTooBig,
    /// 1012: the server is restarting; reconnect (to another node) with backoff.
    ServiceRestart,
    /// 4000: nothing received for `websocket.idle_timeout_s`; reconnect.
    IdleTimeout,
    /// 4003: the app was disabled or deleted; do not reconnect.
    AppDisabled,
    /// 4008: the client read too slowly and its queue filled; reconnect and catch up.
    SlowConsumer,
    /// 4009: the app ended its user's connections (Pusher's `terminate_connections`).
    Terminated,
    /// 4029: the client kept sending over its rate limit; reconnect later, slower.
    RateLimited,
}

impl CloseCode {
    /// Every code.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::ServiceRestart,
        CloseCode::IdleTimeout,
        CloseCode::AppDisabled,
        CloseCode::SlowConsumer,
        CloseCode::Terminated,
        CloseCode::RateLimited,
    ];

    /// The code numbered `code`.
    pub fn of(code: u16) -> Option<CloseCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ServiceRestart => 1012,
            CloseCode::IdleTimeout => 4000,
            CloseCode::AppDisabled => 4003,
            CloseCode::SlowConsumer => 4008,
            CloseCode::Terminated => 4009,
            CloseCode::RateLimited => 4029,
        }
    }

    /// The close reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "text frame is not valid UTF-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::ServiceRestart => "service restart",
            CloseCode::IdleTimeout => "idle timeout",
            CloseCode::AppDisabled => "app disabled",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::Terminated => "terminated",
            CloseCode::RateLimited => "rate limited",
        }
    }
}

/// Builders of server frames. Each returns the JSON text, built once and shared.
#[derive(Debug)]
pub struct ServerFrame;

#[derive(Serialize)]
struct Connected<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    connection_id: &'a str,
    app_id: &'a str,
    user_id: Option<&'a str>,
    heartbeat_s: u64,
}

#[derive(Serialize)]
struct MemberView<'a> {
    user_id: &'a str,
    user_info: &'a RawValue,
}

#[derive(Serialize)]
struct Published<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    id: u64,
    offset: u64,
}

#[derive(Serialize)]
struct RoomAck<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

#[derive(Serialize)]
struct Subscribed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    offset: u64,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Vec<MemberView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member_count: Option<usize>,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    event: &'a str,
    data: &'a RawValue,
    offset: u64,
    timestamp: i64,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

fn to_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("server frames always serialize")
}

impl ServerFrame {
    /// `{"type":"connected",…}`, the first frame of every connection.
    pub fn connected(connection_id: &str, app_id: &str, user_id: Option<&str>, heartbeat_s: u64) -> String {
        to_text(&Connected { kind: "connected", connection_id, app_id, user_id, heartbeat_s })
    }

    /// `{"type":"subscribed","room",…,"offset","epoch"}`, with `recovered` (and `reason`) when
    /// the subscribe asked to recover, and for a presence room `presence` and `member_count`.
    pub fn subscribed(
        room: &RoomName,
        id: Option<u64>,
        stream: StreamAck<'_>,
        presence: Option<(&[Member], usize)>,
    ) -> String {
        to_text(&Subscribed {
            kind: "subscribed",
            room: room.as_str(),
            id,
            offset: stream.offset,
            epoch: stream.epoch,
            recovered: stream.recovered,
            reason: stream.reason,
            presence: presence.map(|(members, _)| {
                members.iter().map(|m| MemberView { user_id: &m.user_id, user_info: &m.user_info }).collect()
            }),
            member_count: presence.map(|(_, n)| n),
        })
    }

    /// `{"user_id":…,"user_info":…}`: the data of `user-joined` and `user-left`.
    pub fn member(user_id: &str, user_info: &RawValue) -> String {
        to_text(&MemberView { user_id, user_info })
    }

    /// `{"type":"unsubscribed",…}`.
    pub fn unsubscribed(room: &RoomName, id: Option<u64>) -> String {
        to_text(&RoomAck { kind: "unsubscribed", room: room.as_str(), id })
    }

    /// `{"type":"published",…}`: a client event with an `id` was published at `offset`.
    pub fn published(room: &RoomName, id: u64, offset: u64) -> String {
        to_text(&Published { kind: "published", room: room.as_str(), id, offset })
    }

    /// `{"type":"event",…}`: the one frame a broadcast becomes, shared by all its receivers.
    pub fn event(room: &RoomName, event: &EventName, data: &RawValue, offset: u64, timestamp: i64) -> String {
        to_text(&Event { kind: "event", room: room.as_str(), event: event.as_str(), data, offset, timestamp })
    }

    /// `{"type":"error",…}` with the code's fixed message, and the room the refused frame named
    /// when it named a valid one.
    pub fn error(code: ErrorCode, room: Option<&RoomName>, id: Option<u64>) -> String {
        to_text(&ErrorFrame {
            kind: "error",
            code: code.as_str(),
            message: code.message(),
            room: room.map(RoomName::as_str),
            id,
        })
    }

    /// `{"type":"pong",…}`.
    pub fn pong(id: Option<u64>) -> String {
        match id {
            Some(id) => format!(r#"{{"type":"pong","id":{id}}}"#),
            None => r#"{"type":"pong"}"#.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_depth_and_compaction_ignore_strings() {
        use super::{compact_json, json_depth};
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(json_depth(r#"["[[[{{", "\"[[", {}]"#), 2);
        assert_eq!(
            compact_json("{ \"a b\" : [ 1 ,\n 2e999 ] , \"c\\\" d\":\t\"x y\" }"),
            r#"{"a b":[1,2e999],"c\" d":"x y"}"#
        );
        assert_eq!(compact_json(" \"é ü\" "), "\"é ü\"");
    }

    use super::*;

    #[test]
    fn room_names() {
        for ok in ["chat", "a", "A-z_0=9@x,y.z;w:v", &"r".repeat(164)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "with space", "slash/", "é", "star*", &"r".repeat(165)] {
            assert!(RoomName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_names() {
        assert!(EventName::parse("new-message").is_ok());
        assert!(EventName::parse("héllo wörld").is_ok());
        assert!(EventName::parse(&"é".repeat(200)).is_ok());
        assert!(EventName::parse(&"e".repeat(201)).is_err());
        assert!(EventName::parse("").is_err());
        assert!(EventName::parse("tab\there").is_err());
        assert!(EventName::parse("roomcast:internal").is_err());
    }

    #[test]
    fn patterns() {
        let room = |s| RoomName::parse(s).unwrap();
        let p = |s| RoomPattern::parse(s).unwrap();
        assert!(p("chat").allows(&room("chat")));
        assert!(!p("chat").allows(&room("chat2")));
        assert!(p("chat-*").allows(&room("chat-1")));
        assert!(p("*").allows(&room("anything")));
        assert!(!p("*").allows(&room("private-x")));
        assert!(!p("pri*").allows(&room("private-x")));
        assert!(p("private-*").allows(&room("private-x")));
        assert!(p("private-x").allows(&room("private-x")));
        assert!(RoomPattern::parse("a*b").is_err());
        assert!(RoomPattern::parse("").is_err());
        assert!(RoomPattern::parse("**").is_err());

        assert!(RoomGrants::default().allows(&room("public")));
        assert!(!RoomGrants::default().allows(&room("private-a")));
        let only = RoomGrants::new(Some(vec![p("team-*")]));
        assert!(only.allows(&room("team-1")));
        assert!(!only.allows(&room("other")));
    }

    #[test]
    fn client_frames() {
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"subscribe","room":"chat","id":7}"#),
            Ok(ClientFrame::Subscribe { id: Some(7), .. })
        ));
        assert!(matches!(ClientFrame::parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping { id: None })));
        match ClientFrame::parse(r#"{"type":"publish","room":"r","event":"e","data":{"a":[1,2]}}"#) {
            Ok(ClientFrame::Publish { data, .. }) => assert_eq!(data.get(), r#"{"a":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        let err = ClientFrame::parse(r#"{"type":"dance","id":3}"#).unwrap_err();
        assert_eq!((err.code, err.id), (ErrorCode::InvalidMessage, Some(3)));
        let err = ClientFrame::parse(r#"{"type":"subscribe","room":"bad room","id":4}"#).unwrap_err();
        assert_eq!((err.code, err.id), (ErrorCode::InvalidRoom, Some(4)));
        let err = ClientFrame::parse(r#"{"type":"subscribe","id":5}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRoom);
        for garbage in ["", "nope", "[]", "42", r#"{"type":1}"#, r#"{"type":"ping","id":-1}"#] {
            assert_eq!(ClientFrame::parse(garbage).unwrap_err().code, ErrorCode::InvalidMessage, "{garbage}");
        }
    }

    #[test]
    fn server_frames_are_json() {
        let room = RoomName::parse("chat").unwrap();
        let data = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let frame = ServerFrame::event(&room, &EventName::parse("m").unwrap(), &data, 3, 1000);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["data"]["x"], 1);
        assert_eq!(v["offset"], 3);
        let pong: serde_json::Value = serde_json::from_str(&ServerFrame::pong(Some(9))).unwrap();
        assert_eq!(pong, serde_json::json!({"type":"pong","id":9}));
        let err: serde_json::Value =
            serde_json::from_str(&ServerFrame::error(ErrorCode::RoomForbidden, Some(&room), None)).unwrap();
        assert_eq!(err["code"], "room_forbidden");
        assert_eq!(
            (&err["room"], &err["message"]),
            (&serde_json::json!("chat"), &serde_json::json!(ErrorCode::RoomForbidden.message()))
        );
        assert!(err.get("id").is_none());
    }
}
