//! A webhook receiver for tests: an axum server on 127.0.0.1 that records every request and
//! answers from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use serde_json::Value;
use tokio::sync::mpsc;

use super::WAIT;

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Waits, then answers.
    Slow(Duration, u16),
}

/// One request the receiver got.
#[derive(Debug)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: an axum server on 127.0.0.1 that records every request and answers from
/// a script, then with `fallback`.
pub struct Receiver {
    pub addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ReceiverState {
    hits: mpsc::UnboundedSender<Hit>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
}

async fn receive(
    axum::extract::State(s): axum::extract::State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let _ = s.hits.send(Hit { headers, body });
    let reply = s.script.lock().unwrap().pop_front().unwrap_or(*s.fallback.lock().unwrap());
    let code = match reply {
        Reply::Status(code) => code,
        Reply::Slow(wait, code) => {
            tokio::time::sleep(wait).await;
            code
        }
    };
    AxumStatus::from_u16(code).unwrap()
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn on(listener: tokio::net::TcpListener) -> Receiver {
        let (tx, hits) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let fallback = Arc::new(Mutex::new(Reply::Status(200)));
        let state = ReceiverState { hits: tx, script: script.clone(), fallback: fallback.clone() };
        let app = axum::Router::new().fallback(receive).with_state(state);
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, hits, script, fallback, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn then(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().copied());
    }

    pub fn always(&self, reply: Reply) {
        *self.fallback.lock().unwrap() = reply;
    }

    pub async fn next(&mut self) -> Hit {
        tokio::time::timeout(WAIT, self.hits.recv()).await.expect("a webhook request in time").unwrap()
    }

    /// The next `n` requests' bodies.
    pub async fn bodies(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await.json());
        }
        out
    }

    /// Asserts that nothing arrives for a moment (used only after the awaited events of a test,
    /// to show that no extra request follows).
    pub async fn quiet(&mut self, for_: Duration) {
        if let Ok(Some(hit)) = tokio::time::timeout(for_, self.hits.recv()).await {
            panic!("unexpected webhook request: {}", String::from_utf8_lossy(&hit.body));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
