//! The Pusher Channels protocol 7 wire (DESIGN §12): the frames a Pusher client sends and gets,
//! Pusher's error and close codes, and the HMAC signatures of channel authorization and user
//! sign-in. Frames are parsed here, where bytes enter; the session takes the results.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::domain::{EventName, Member, RoomName, unhex};

/// The only protocol version served; pusher-js 7 and 8 speak it.
pub const PROTOCOL: u8 = 7;
/// Oldest protocol version accepted: 5 and 6 differ from 7 only in what the server may omit.
pub const OLDEST_PROTOCOL: u8 = 5;
/// Prefix of client events.
pub const CLIENT_EVENT_PREFIX: &str = "client-";
/// Prefix of the channel pusher-js subscribes to after signing in, for events sent to a user.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// Pusher's close and error codes. 4000–4099: do not reconnect; 4100–4199: reconnect after a
/// back-off; 4200–4299: reconnect at once (pusher-js acts on these ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PusherCode {
    /// 4001: no such app.
    AppNotFound,
    /// 4003: the app is disabled.
    AppDisabled,
    /// 4004: the app is over its `max_connections`.
    OverQuota,
    /// 4006: a `protocol` that is not a version number.
    InvalidVersion,
    /// 4007: a protocol version not served.
    UnsupportedProtocol,
    /// 4008: no `protocol` given.
    NoProtocol,
    /// 4009: not allowed: a refused Origin, or the user's connections were terminated.
    Unauthorized,
    /// 4009 too: the app does not take Pusher clients (`pusher_clients` is off).
    NotEnabled,
    /// 4100: the node is full, or the client kept sending over its rate: back off.
    OverCapacity,
    /// 4200: reconnect at once (the node restarts, or the client read too slowly).
    Reconnect,
    /// 4201: nothing heard from the client in time.
    PongNotReceived,
    /// 4301: a client event over the rate limit.
    ClientEventRateLimited,
}

impl PusherCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            PusherCode::AppNotFound => 4001,
            PusherCode::AppDisabled => 4003,
            PusherCode::OverQuota => 4004,
            PusherCode::InvalidVersion => 4006,
            PusherCode::UnsupportedProtocol => 4007,
            PusherCode::NoProtocol => 4008,
            PusherCode::Unauthorized | PusherCode::NotEnabled => 4009,
            PusherCode::OverCapacity => 4100,
            PusherCode::Reconnect => 4200,
            PusherCode::PongNotReceived => 4201,
            PusherCode::ClientEventRateLimited => 4301,
        }
    }

    /// The message sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            PusherCode::AppNotFound => "no app with this key",
            PusherCode::AppDisabled => "the app is disabled",
            PusherCode::OverQuota => "the app is over its connection quota",
            PusherCode::InvalidVersion => "invalid protocol version",
            PusherCode::UnsupportedProtocol => "unsupported protocol version; this server speaks 7",
            PusherCode::NoProtocol => "no protocol version given",
            PusherCode::Unauthorized => "connection unauthorized",
            PusherCode::NotEnabled => "this app does not take Pusher clients (pusher_clients is off)",
            PusherCode::OverCapacity => "over capacity; reconnect later",
            PusherCode::Reconnect => "reconnect",
            PusherCode::PongNotReceived => "nothing received in time",
            PusherCode::ClientEventRateLimited => "client event rejected: over the rate limit",
        }
    }
}

/// What a Pusher client may send.
#[derive(Debug)]
pub enum PusherFrame {
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    Ping,
    /// A `pusher:pong`, or another `pusher:` event the server has nothing to say to.
    Ignored,
    Signin {
        auth: String,
        user_data: String,
    },
    /// A `client-…` event.
    Client {
        event: EventName,
        channel: String,
        data: Box<RawValue>,
    },
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    channel: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Fields {
    channel: Option<String>,
    auth: Option<String>,
    channel_data: Option<String>,
    user_data: Option<String>,
}

impl PusherFrame {
    /// Reads one text frame; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let frame: Incoming<'_> =
            serde_json::from_str(text).map_err(|e| format!("not a Pusher frame ({e})"))?;
        let fields = || -> Result<Fields, String> {
            match frame.data {
                // pusher-js sends objects; some clients send them as JSON text.
                Some(raw) if raw.get().starts_with('"') => {
                    let text: String = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
                    serde_json::from_str(&text).map_err(|e| format!("data: {e}"))
                }
                Some(raw) => serde_json::from_str(raw.get()).map_err(|e| format!("data: {e}")),
                None => Ok(Fields::default()),
            }
        };
        let event = frame.event.as_ref();
        match event {
            "pusher:subscribe" => {
                let f = fields()?;
                let channel = f.channel.ok_or("pusher:subscribe needs data.channel")?;
                Ok(PusherFrame::Subscribe { channel, auth: f.auth, channel_data: f.channel_data })
            }
            "pusher:unsubscribe" => Ok(PusherFrame::Unsubscribe {
                channel: fields()?.channel.ok_or("pusher:unsubscribe needs data.channel")?,
            }),
            "pusher:ping" => Ok(PusherFrame::Ping),
            "pusher:signin" => {
                let f = fields()?;
                match (f.auth, f.user_data) {
                    (Some(auth), Some(user_data)) => Ok(PusherFrame::Signin { auth, user_data }),
                    _ => Err("pusher:signin needs data.auth and data.user_data".into()),
                }
            }
            _ if event.starts_with("pusher:") || event.starts_with("pusher_internal:") => {
                Ok(PusherFrame::Ignored)
            }
            _ if event.starts_with(CLIENT_EVENT_PREFIX) => {
                let channel = frame.channel.ok_or("a client event needs a channel")?;
                let event = EventName::parse(event).map_err(|e| format!("event name {e}"))?;
                let data = frame.data.map_or_else(|| RawValue::NULL.to_owned(), ToOwned::to_owned);
                Ok(PusherFrame::Client { event, channel, data })
            }
            _ => Err(format!("client events must start with {CLIENT_EVENT_PREFIX:?}")),
        }
    }
}

/// `data` as Pusher delivers it, JSON-encoded: a JSON string stays that string, any other JSON
/// becomes its text as a string.
fn data_text(data: &RawValue) -> String {
    let raw = data.get();
    if raw.starts_with('"') { raw.to_owned() } else { json_string(raw) }
}

/// `data` as the string Pusher gives (decoded): a JSON string's value, else the JSON text.
pub fn data_string(data: &RawValue) -> String {
    serde_json::from_str::<String>(data.get()).unwrap_or_else(|_| data.get().to_owned())
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// A frame with its `data` already encoded.
fn frame(event: &str, channel: Option<&str>, data: &str) -> String {
    framed(event, channel, data, None)
}

/// [`frame`] with the `user_id` of a client event's sender.
fn framed(event: &str, channel: Option<&str>, data: &str, user_id: Option<&str>) -> String {
    let mut out = String::with_capacity(event.len() + data.len() + 48);
    out.push_str(r#"{"event":"#);
    out.push_str(&json_string(event));
    if let Some(channel) = channel {
        out.push_str(r#","channel":"#);
        out.push_str(&json_string(channel));
    }
    out.push_str(r#","data":"#);
    out.push_str(data);
    if let Some(user_id) = user_id {
        out.push_str(r#","user_id":"#);
        out.push_str(&json_string(user_id));
    }
    out.push('}');
    out
}

/// An event of `room` as Pusher clients get it, with the `user_id` of the client event's
/// `sender` in a presence room. In a presence room the hub's `user-joined` and `user-left` are
/// Pusher's `pusher_internal:member_added` and `member_removed`.
pub fn event(room: &RoomName, event: &EventName, data: &RawValue, sender: Option<&str>) -> String {
    let name = match event.as_str() {
        "user-joined" if room.is_presence() => "pusher_internal:member_added",
        "user-left" if room.is_presence() => "pusher_internal:member_removed",
        name => name,
    };
    framed(name, Some(room.as_str()), &data_text(data), sender)
}

/// `pusher:connection_established`, the first frame of every connection.
pub fn connection_established(socket_id: &str, activity_timeout_s: u64) -> String {
    let data =
        format!(r#"{{"socket_id":{},"activity_timeout":{activity_timeout_s}}}"#, json_string(socket_id));
    frame("pusher:connection_established", None, &json_string(&data))
}

#[derive(Serialize)]
struct Presence<'a> {
    presence: PresenceData<'a>,
}

#[derive(Serialize)]
struct PresenceData<'a> {
    ids: Vec<&'a str>,
    hash: serde_json::Map<String, serde_json::Value>,
    count: usize,
}

/// `pusher_internal:subscription_succeeded`; for a presence channel with its members (at most
/// the listed ones) and their count.
pub fn subscription_succeeded(channel: &str, presence: Option<(&[Member], usize)>) -> String {
    let data = match presence {
        None => "{}".to_owned(),
        Some((members, count)) => {
            let hash = members
                .iter()
                .map(|m| {
                    let info = serde_json::from_str(m.user_info.get()).unwrap_or(serde_json::Value::Null);
                    (m.user_id.to_string(), info)
                })
                .collect();
            let ids = members.iter().map(|m| &*m.user_id).collect();
            serde_json::to_string(&Presence { presence: PresenceData { ids, hash, count } })
                .expect("presence data always serializes")
        }
    };
    frame("pusher_internal:subscription_succeeded", Some(channel), &json_string(&data))
}

/// `pusher:subscription_error` for `channel`, with an HTTP-like `status` (401, 403, 503…).
pub fn subscription_error(channel: &str, status: u16, error: &str) -> String {
    let kind = if status == 401 { "AuthError" } else { "SubscriptionError" };
    let data = format!(r#"{{"type":"{kind}","error":{},"status":{status}}}"#, json_string(error));
    frame("pusher:subscription_error", Some(channel), &data)
}

/// `pusher:error` with a code (`None` for the errors Pusher sends without one) and a message.
pub fn error(code: Option<u16>, message: &str) -> String {
    let code = code.map_or_else(|| "null".to_owned(), |c| c.to_string());
    frame("pusher:error", None, &format!(r#"{{"code":{code},"message":{}}}"#, json_string(message)))
}

/// `pusher:pong`.
pub fn pong() -> String {
    frame("pusher:pong", None, r#""{}""#)
}

/// `pusher:signin_success`, echoing the signed `user_data`.
pub fn signin_success(user_data: &str) -> String {
    let data = format!(r#"{{"user_data":{}}}"#, json_string(user_data));
    frame("pusher:signin_success", None, &json_string(&data))
}

/// Whether `auth` is `{app_key}:{hex HMAC-SHA256(secret, signed)}`, checked in constant time.
pub fn verify(app_key: &str, secret: &str, auth: &str, signed: &str) -> bool {
    auth.split_once(':')
        .is_some_and(|(key, signature)| key == app_key && signed_by(secret, signed, signature))
}

/// Whether `signature` is the hex HMAC-SHA256 of `signed` with `secret`, checked in constant
/// time: what every Pusher signature is (channels, sign-in, HTTP API requests).
pub fn signed_by(secret: &str, signed: &str, signature: &str) -> bool {
    let Some(given) = unhex::<32>(signature) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(signed.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// What a channel authorization signs: `{socket_id}:{channel}`, and `:{channel_data}` for a
/// presence channel.
pub fn channel_signed(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// What a user sign-in signs.
pub fn signin_signed(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// A presence subscription's `channel_data`: the user id (a string or a number, as a string)
/// and `user_info` (JSON null when absent).
pub fn presence_member(channel_data: &str) -> Result<(String, Box<RawValue>), String> {
    #[derive(Deserialize)]
    struct ChannelData {
        user_id: serde_json::Value,
        user_info: Option<Box<RawValue>>,
    }
    let data: ChannelData =
        serde_json::from_str(channel_data).map_err(|e| format!("channel_data is not valid: {e}"))?;
    let user_id = match data.user_id {
        serde_json::Value::String(s) if !s.is_empty() => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err("channel_data.user_id must be a non-empty string or a number".into()),
    };
    Ok((user_id, data.user_info.unwrap_or_else(|| RawValue::NULL.to_owned())))
}

/// A sign-in's `user_data`: its `id`, which must be a non-empty string.
pub fn signin_user(user_data: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct UserData {
        id: serde_json::Value,
    }
    let data: UserData =
        serde_json::from_str(user_data).map_err(|e| format!("user_data is not valid: {e}"))?;
    match data.id {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s),
        _ => Err("user_data.id must be a non-empty string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn event_data_is_a_json_string_and_presence_events_are_pusher_internal() {
        let room = RoomName::parse("presence-team").unwrap();
        let data = raw(r#"{"user_id":"u1","user_info":null}"#);
        let joined = event(&room, &EventName::system("user-joined"), &data, None);
        let v: serde_json::Value = serde_json::from_str(&joined).unwrap();
        assert_eq!(v["event"], "pusher_internal:member_added");
        assert_eq!(v["channel"], "presence-team");
        assert_eq!(v["data"], r#"{"user_id":"u1","user_info":null}"#);
        let plain = RoomName::parse("news").unwrap();
        let text = event(&plain, &EventName::parse("said").unwrap(), &raw(r#""hi \"there\"""#), None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["event"].as_str(), v["data"].as_str()), (Some("said"), Some(r#"hi "there""#)));
        let named = event(&plain, &EventName::parse("user-joined").unwrap(), &raw("1"), None);
        let v: serde_json::Value = serde_json::from_str(&named).unwrap();
        assert_eq!(v["event"], "user-joined", "only presence rooms map the names");
        let whisper = event(&room, &EventName::parse("client-x").unwrap(), &raw("{}"), Some("u\n2"));
        let v: serde_json::Value = serde_json::from_str(&whisper).unwrap();
        assert_eq!((v["user_id"].as_str(), v["data"].as_str()), (Some("u\n2"), Some("{}")));
    }

    #[test]
    fn frames_parse_and_bad_ones_say_why() {
        let sub = PusherFrame::parse(r#"{"event":"pusher:subscribe","data":{"channel":"a","auth":"k:s"}}"#);
        assert!(
            matches!(sub, Ok(PusherFrame::Subscribe { channel, auth: Some(_), channel_data: None }) if channel == "a")
        );
        let as_text = PusherFrame::parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"b\"}"}"#);
        assert!(matches!(as_text, Ok(PusherFrame::Subscribe { channel, .. }) if channel == "b"));
        assert!(matches!(
            PusherFrame::parse(r#"{"event":"client-x","channel":"private-a","data":{"n":1}}"#),
            Ok(PusherFrame::Client { data, .. }) if data.get() == r#"{"n":1}"#
        ));
        assert!(matches!(
            PusherFrame::parse(r#"{"event":"pusher:pong","data":{}}"#),
            Ok(PusherFrame::Ignored)
        ));
        assert!(
            PusherFrame::parse(r#"{"event":"pusher:subscribe","data":{}}"#).unwrap_err().contains("channel")
        );
        assert!(PusherFrame::parse(r#"{"event":"hello","channel":"a"}"#).unwrap_err().contains("client-"));
        assert!(PusherFrame::parse("[1]").is_err());
        assert!(PusherFrame::parse(r#"{"event":"pusher:signin","data":{"auth":"k:s"}}"#).is_err());
    }

    #[test]
    fn signatures_and_channel_data() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(b"1.2:private-a");
        let good = format!("app:{}", crate::domain::hex(&mac.finalize().into_bytes()));
        assert!(verify("app", "secret", &good, &channel_signed("1.2", "private-a", None)));
        assert!(!verify("other", "secret", &good, "1.2:private-a"), "another app's key");
        assert!(!verify("app", "wrong", &good, "1.2:private-a"));
        assert!(!verify("app", "secret", &good, "1.3:private-a"), "another socket");
        assert!(!verify("app", "secret", "app:zz", "1.2:private-a"));
        assert!(!verify("app", "secret", "nocolon", "1.2:private-a"));
        assert_eq!(presence_member(r#"{"user_id":7}"#).unwrap().0, "7");
        assert_eq!(presence_member(r#"{"user_id":"u","user_info":{"n":1}}"#).unwrap().1.get(), r#"{"n":1}"#);
        assert!(presence_member(r#"{"user_id":""}"#).is_err());
        assert!(presence_member("nope").is_err());
        assert_eq!(signin_user(r#"{"id":"u1","name":"Ann"}"#).unwrap(), "u1");
        assert!(signin_user(r#"{"id":5}"#).is_err());
    }

    #[test]
    fn presence_subscription_lists_ids_hash_and_count() {
        let members =
            [Member { user_id: "u1".into(), user_info: std::sync::Arc::from(raw(r#"{"name":"Ann"}"#)) }];
        let text = subscription_succeeded("presence-a", Some((&members, 3)));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["presence"]["ids"], serde_json::json!(["u1"]));
        assert_eq!(data["presence"]["hash"]["u1"]["name"], "Ann");
        assert_eq!(data["presence"]["count"], 3);
        let v: serde_json::Value = serde_json::from_str(&connection_established("1.2", 25)).unwrap();
        assert_eq!(v["data"], r#"{"socket_id":"1.2","activity_timeout":25}"#);
    }
}
