//! The two hubs the generator speaks to: roomcast's own protocol, and the Pusher protocol v7
//! (Sockudo, Soketi, Pusher) for side-by-side runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::Md5;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// Which protocol the hub speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Roomcast,
    Pusher,
}

/// Credentials and addresses of the app the run uses.
#[derive(Debug, Clone)]
pub struct Target {
    pub protocol: Protocol,
    /// `http://host:port`: where clients connect and the run's app is managed.
    pub base: String,
    /// Where broadcasts go; `base` unless another node of a cluster is named.
    pub publish_base: String,
    pub host: SocketAddr,
    pub app_id: String,
    /// roomcast: the app secret (signs client JWTs). Pusher: the app secret (signs API calls).
    pub secret: String,
    /// roomcast: the app's API key. Pusher: the app key (public, in the WebSocket URL).
    pub key: String,
}

/// A connected, subscribed client socket.
pub type Socket = WebSocketStream<TcpStream>;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Target {
    /// For roomcast with an admin key: creates a fresh app with room for `connections` clients.
    pub async fn roomcast_with_new_app(base: &str, admin_key: &str, connections: usize) -> Result<Self> {
        let http = crate::http().build()?;
        let app_id = format!("lt-{}", rand::random::<u32>());
        let res = http
            .post(format!("{base}/api/applications"))
            .header("X-ADMIN-API-KEY", admin_key)
            // Twice the clients: a client that reconnects at once (the jitter scenario) may be counted
            // twice while the node is still closing its old connection.
            .json(&json!({"app_id": app_id, "max_connections": 2 * connections as u64 + 1000, "rate_limit": 1_000_000}))
            .send()
            .await
            .context("creating the load-test app")?;
        let status = res.status();
        let body: Value = res.json().await?;
        if !status.is_success() {
            bail!("creating the load-test app: {status} {body}");
        }
        Ok(Self {
            protocol: Protocol::Roomcast,
            base: base.to_owned(),
            publish_base: base.to_owned(),
            host: host_of(base)?,
            app_id,
            secret: body["app_secret"].as_str().context("app_secret")?.to_owned(),
            key: body["api_key"].as_str().context("api_key")?.to_owned(),
        })
    }

    /// This roomcast app used through roomcast's Pusher protocol (Pusher's key is the app id),
    /// once it takes Pusher clients (`pusher_clients`).
    pub async fn as_pusher(self, admin_key: &str) -> Result<Self> {
        let http = crate::http().build()?;
        let res = http
            .put(format!("{}/api/applications/{}", self.base, self.app_id))
            .header("X-ADMIN-API-KEY", admin_key)
            .json(&json!({"pusher_clients": true}))
            .send()
            .await
            .context("letting the load-test app take Pusher clients")?;
        if !res.status().is_success() {
            bail!("letting the load-test app take Pusher clients: {}", res.status());
        }
        Ok(Self { protocol: Protocol::Pusher, key: self.app_id.clone(), ..self })
    }

    /// When broadcasts go to another node: waits (up to 10 s) until that node knows the app's
    /// key, which it learns from the shared store.
    pub async fn wait_for_publish_node(&self) -> Result<()> {
        if self.publish_base == self.base || self.protocol != Protocol::Roomcast {
            return Ok(());
        }
        let http = crate::http().build()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let res = http
                .get(format!("{}/api/test", self.publish_base))
                .header("X-APP-API-KEY", &self.key)
                .send()
                .await;
            if res.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("{} never accepted the app's key", self.publish_base);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A target with known credentials.
    pub fn new(protocol: Protocol, base: &str, app_id: &str, secret: &str, key: &str) -> Result<Self> {
        Ok(Self {
            protocol,
            base: base.to_owned(),
            publish_base: base.to_owned(),
            host: host_of(base)?,
            app_id: app_id.to_owned(),
            secret: secret.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Opens a socket from `source` (a 127.0.0.x address, to spread the ephemeral ports), waits
    /// for the hub's hello, subscribes to `room` and waits for the acknowledgement.
    pub async fn connect(&self, source: Ipv4Addr, room: &str, user: u64) -> Result<Socket> {
        Ok(self.connect_since(source, room, user, None).await?.0)
    }

    /// [`Target::connect`] asking to recover after `since` (`offset`, `epoch`: roomcast only);
    /// returns the socket and the `subscribed` frame.
    pub async fn connect_since(
        &self,
        source: Ipv4Addr,
        room: &str,
        user: u64,
        since: Option<(u64, &str)>,
    ) -> Result<(Socket, Value)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        let tcp = socket.connect(self.host).await.context("TCP connect")?;
        tcp.set_nodelay(true)?;
        let host = self.host;
        let url = match self.protocol {
            Protocol::Roomcast => format!("ws://{host}/ws?token={}", self.client_token(user)),
            Protocol::Pusher => {
                format!("ws://{host}/app/{}?protocol=7&client=roomcast-loadtest&version=1", self.key)
            }
        };
        // Small buffers: the generator holds up to 100,000 of these sockets.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut ws, _) = client_async_with_config(url.into_client_request()?, tcp, Some(config))
            .await
            .context("WebSocket handshake")?;
        let hello = next_text(&mut ws).await?;
        let subscribe = match self.protocol {
            Protocol::Roomcast => {
                if !hello.contains("\"connected\"") {
                    bail!("unexpected first frame {hello}");
                }
                match since {
                    Some((offset, epoch)) => {
                        json!({"type": "subscribe", "room": room, "since": {"offset": offset, "epoch": epoch}})
                    }
                    None => json!({"type": "subscribe", "room": room}),
                }
                .to_string()
            }
            Protocol::Pusher => {
                if !hello.contains("pusher:connection_established") {
                    bail!("unexpected first frame {hello}");
                }
                json!({"event": "pusher:subscribe", "data": {"channel": room}}).to_string()
            }
        };
        ws.send(Message::Text(subscribe.into())).await?;
        let ack = next_text(&mut ws).await?;
        let ok = match self.protocol {
            Protocol::Roomcast => ack.contains("\"subscribed\""),
            Protocol::Pusher => ack.contains("subscription_succeeded"),
        };
        if !ok {
            bail!("subscribe refused: {ack}");
        }
        let ack = serde_json::from_str(&ack).unwrap_or(Value::Null);
        Ok((ws, ack))
    }

    /// A client JWT signed here with the app secret, as a backend would.
    fn client_token(&self, user: u64) -> String {
        let now = unix_now();
        let claims =
            json!({"app_id": self.app_id, "iat": now, "exp": now + 3600, "user_id": format!("u{user}")});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .expect("HS256 signing cannot fail")
    }

    /// The HTTP request publishing `payload` (a JSON object text) as event `event` into `room`.
    pub fn publish_request(
        &self,
        http: &reqwest::Client,
        room: &str,
        payload: &str,
    ) -> reqwest::RequestBuilder {
        match self.protocol {
            Protocol::Roomcast => {
                let body = format!(r#"{{"room":"{room}","event":"lt","data":{payload}}}"#);
                http.post(format!("{}/api/broadcast", self.publish_base))
                    .header("X-APP-API-KEY", &self.key)
                    .header("Content-Type", "application/json")
                    .body(body)
            }
            Protocol::Pusher => {
                // Built as text, like the native body: the generator shares the CPU with the hub.
                let data = serde_json::to_string(payload).expect("a string serializes");
                let body = format!(r#"{{"name":"lt","channels":["{room}"],"data":{data}}}"#);
                let path = format!("/apps/{}/events", self.app_id);
                let body_md5 = hex(&Md5::digest(body.as_bytes()));
                let query = format!(
                    "auth_key={}&auth_timestamp={}&auth_version=1.0&body_md5={body_md5}",
                    self.key,
                    unix_now()
                );
                let to_sign = format!("POST\n{path}\n{query}");
                let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key length");
                mac.update(to_sign.as_bytes());
                let signature = hex(&mac.finalize().into_bytes());
                http.post(format!("{}{path}?{query}&auth_signature={signature}", self.publish_base))
                    .header("Content-Type", "application/json")
                    .body(body)
            }
        }
    }

    /// Pulls the load-test payload out of an incoming text frame, if it is one. A field scan
    /// rather than a JSON parse: the generator shares the CPU with the hub, and the less it
    /// spends per message the more of the machine the hub gets.
    pub fn payload_of(&self, frame: &str) -> Option<Payload> {
        let is_event = match self.protocol {
            Protocol::Roomcast => frame.starts_with(r#"{"type":"event""#),
            Protocol::Pusher => frame.contains(r#""event":"lt""#),
        };
        if !is_event {
            return None;
        }
        // Pusher's data is a JSON string: its keys are escaped. The form the protocol sends is
        // looked for first, so a frame is scanned once per field.
        let [p, s, t] = match self.protocol {
            Protocol::Roomcast => {
                [(r#""p":"#, r#"\"p\":"#), (r#""s":"#, r#"\"s\":"#), (r#""t":"#, r#"\"t\":"#)]
            }
            Protocol::Pusher => {
                [(r#"\"p\":"#, r#""p":"#), (r#"\"s\":"#, r#""s":"#), (r#"\"t\":"#, r#""t":"#)]
            }
        };
        Some(Payload { p: field(frame, p)? as usize, s: field(frame, s)?, t: field(frame, t)? })
    }
}

/// The unsigned integer after the first of `patterns` found (`"key":`, or `\"key\":` inside
/// Pusher's string-encoded data).
fn field(frame: &str, (first, then): (&str, &str)) -> Option<u64> {
    let start = match frame.find(first) {
        Some(i) => i + first.len(),
        None => frame.find(then)? + then.len(),
    };
    let digits = frame[start..].bytes().take_while(u8::is_ascii_digit).count();
    frame[start..start + digits].parse().ok()
}

/// What each published event carries: publisher, its sequence number in that room, and the
/// send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Payload {
    /// Publisher index.
    pub p: usize,
    /// Sequence number of this publisher's events in this room, from 1.
    pub s: u64,
    /// Send time, microseconds since the epoch.
    pub t: u64,
}

async fn next_text(ws: &mut Socket) -> Result<String> {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .context("timed out waiting for a frame")?
            .ok_or_else(|| anyhow!("socket closed"))??;
        match msg {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Close(c) => bail!("closed: {c:?}"),
            _ => continue,
        }
    }
}

fn host_of(base: &str) -> Result<SocketAddr> {
    let rest = base.strip_prefix("http://").context("the URL must start with http://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.replace("localhost", "127.0.0.1");
    authority.parse().with_context(|| format!("{authority} is not an IP:port"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_found_in_both_protocols() {
        let rc = Target::new(Protocol::Roomcast, "http://127.0.0.1:1", "a", "s", "k").unwrap();
        let frame = r#"{"type":"event","room":"r","event":"lt","data":{"p":2,"s":17,"t":1764000000123456,"pad":"xx"},"offset":9,"timestamp":1}"#;
        assert_eq!(rc.payload_of(frame), Some(Payload { p: 2, s: 17, t: 1_764_000_000_123_456 }));
        assert_eq!(rc.payload_of(r#"{"type":"subscribed","room":"r"}"#), None);
        let pusher = Target::new(Protocol::Pusher, "http://127.0.0.1:1", "a", "s", "k").unwrap();
        let frame = r#"{"event":"lt","channel":"r","data":"{\"p\":0,\"s\":3,\"t\":99,\"pad\":\"x\"}"}"#;
        assert_eq!(pusher.payload_of(frame), Some(Payload { p: 0, s: 3, t: 99 }));
        assert_eq!(pusher.payload_of(r#"{"event":"pusher:pong","data":{}}"#), None);
    }
}
