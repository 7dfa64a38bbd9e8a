//! [`ConnHandle`]: the part of a connection that others touch. The fan-out puts frames in its
//! outbox, the hub and the heartbeat sweeper ask it to close or to ping, and one waker brings
//! the connection's task round to act. An idle connection holds no queue memory and no timer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use super::Frame;
use crate::domain::{AppId, ConnectionId};
use crate::protocol::CloseCode;

/// Result of offering a frame to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// The outbox was full: the connection is being closed with 4008.
    Full,
    /// The connection is already closing.
    Gone,
}

/// The protocol a connection speaks, which decides the frames it is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// roomcast's own (`/ws`).
    Native,
    /// Pusher Channels protocol 7 (`/app/{key}`).
    Pusher,
}

/// Bounds of one connection's outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub messages: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Frames and bytes of a replay (a recovering subscribe) still counted in the outbox: a
    /// replay may exceed the bounds, and live frames after it are measured without it.
    replayed: u32,
    replayed_bytes: u32,
}

/// Capacity an emptied outbox may keep; a burst's larger buffer is given back.
const KEEP_CAPACITY: usize = 8;

/// The shared part of one connection: what the registry holds for it.
#[derive(Debug)]
pub struct ConnHandle {
    /// Process-unique number; registry maps key on it.
    pub seq: u64,
    /// `c_…` (or a Pusher socket id), the id clients see (and `exclude_connection_id` names).
    pub id: ConnectionId,
    pub app_id: AppId,
    pub protocol: Protocol,
    /// The user: from a native token at connect; a Pusher connection's first presence
    /// subscription or sign-in sets it, and it never changes after.
    user_id: OnceLock<Arc<str>>,
    /// The client's address when it came through a trusted proxy: such connections are counted
    /// per address by the hub (a direct client's are counted per TCP connection at accept).
    pub client_ip: Option<std::net::IpAddr>,
    limits: OutboxLimits,
    outbox: Mutex<Outbox>,
    /// Frames waiting; readable without the lock.
    queued: AtomicU64,
    waker: AtomicWaker,
    close_code: AtomicU16,
    ping_due: AtomicBool,
    /// When the client last sent anything, in ms of the hub clock.
    last_seen_ms: AtomicU64,
}

/// What woke a connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Close with this code.
    Close(u16),
    /// Frames are waiting (and maybe a ping is due too).
    Work,
}

impl ConnHandle {
    pub(super) fn new(
        seq: u64,
        (id, protocol): (ConnectionId, Protocol),
        app_id: AppId,
        user_id: Option<Arc<str>>,
        client_ip: Option<std::net::IpAddr>,
        limits: OutboxLimits,
        now_ms: u64,
    ) -> Self {
        Self {
            seq,
            id,
            app_id,
            protocol,
            user_id: user_id.map(OnceLock::from).unwrap_or_default(),
            client_ip,
            limits,
            outbox: Mutex::new(Outbox::default()),
            queued: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            close_code: AtomicU16::new(0),
            ping_due: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(now_ms),
        }
    }

    /// The connection's user, if it has one yet.
    pub fn user_id(&self) -> Option<&Arc<str>> {
        self.user_id.get()
    }

    /// Makes `user_id` the connection's user; `false` when it already is another one.
    pub fn become_user(&self, user_id: &str) -> bool {
        &**self.user_id.get_or_init(|| Arc::from(user_id)) == user_id
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // Nothing panics while holding this lock; recover rather than poison the connection.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places `frame` in the outbox without waiting. A full outbox closes the connection.
    pub fn deliver(&self, frame: &Frame) -> Delivery {
        if self.close_code.load(Ordering::Relaxed) != 0 {
            return Delivery::Gone;
        }
        let mut outbox = self.outbox();
        let (frames, bytes) =
            (outbox.frames.len() - outbox.replayed as usize, outbox.bytes - outbox.replayed_bytes as usize);
        if frames >= self.limits.messages || bytes + frame.len() > self.limits.bytes {
            drop(outbox);
            self.close(CloseCode::SlowConsumer);
            return Delivery::Full;
        }
        outbox.bytes += frame.len();
        outbox.frames.push_back(frame.clone());
        self.queued.store(outbox.frames.len() as u64, Ordering::Release);
        drop(outbox);
        self.waker.wake();
        Delivery::Queued
    }

    /// Places the frames a recovering subscribe missed in the outbox, whatever its bounds (a
    /// replay is at most one room's history).
    pub fn deliver_replay(&self, frames: impl IntoIterator<Item = Frame>) {
        if self.close_code.load(Ordering::Relaxed) != 0 {
            return;
        }
        let mut outbox = self.outbox();
        for frame in frames {
            outbox.bytes += frame.len();
            outbox.replayed = outbox.replayed.saturating_add(1);
            outbox.replayed_bytes = outbox.replayed_bytes.saturating_add(frame.len() as u32);
            outbox.frames.push_back(frame);
        }
        self.queued.store(outbox.frames.len() as u64, Ordering::Release);
        drop(outbox);
        self.waker.wake();
    }

    /// Takes the oldest waiting frame.
    pub fn next_frame(&self) -> Option<Frame> {
        let mut outbox = self.outbox();
        let frame = outbox.frames.pop_front()?;
        outbox.bytes -= frame.len();
        outbox.replayed = outbox.replayed.saturating_sub(1);
        outbox.replayed_bytes = outbox.replayed_bytes.saturating_sub(frame.len() as u32);
        // Never more than what is left.
        outbox.replayed = outbox.replayed.min(outbox.frames.len() as u32);
        outbox.replayed_bytes = outbox.replayed_bytes.min(outbox.bytes as u32);
        if outbox.frames.is_empty() && outbox.frames.capacity() > KEEP_CAPACITY {
            outbox.frames.shrink_to(KEEP_CAPACITY);
        }
        self.queued.store(outbox.frames.len() as u64, Ordering::Release);
        Some(frame)
    }

    /// Asks the connection's task to close with `code`; the first request wins.
    pub fn close(&self, code: CloseCode) {
        if self.close_code.compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.waker.wake();
        }
    }

    /// The close code asked for, if any.
    pub fn close_code(&self) -> Option<u16> {
        Some(self.close_code.load(Ordering::Acquire)).filter(|&c| c != 0)
    }

    /// Asks the task to send a WebSocket ping.
    pub fn request_ping(&self) {
        self.ping_due.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a ping was asked for since the last call.
    pub fn take_ping(&self) -> bool {
        self.ping_due.swap(false, Ordering::AcqRel)
    }

    /// Records that the client sent something at `now_ms` (hub clock).
    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the client last sent anything (hub clock, ms).
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Resolves when there is something to do: a close request, waiting frames or a ping.
    pub async fn wake(&self) -> Wake {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if let Some(code) = self.close_code() {
                Poll::Ready(Wake::Close(code))
            } else if self.queued.load(Ordering::Acquire) > 0 || self.ping_due.load(Ordering::Acquire) {
                Poll::Ready(Wake::Work)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves when a close is requested.
    pub async fn closing(&self) -> u16 {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            match self.close_code() {
                Some(code) => Poll::Ready(code),
                None => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(messages: usize, bytes: usize) -> ConnHandle {
        ConnHandle::new(
            1,
            (ConnectionId::generate(), Protocol::Native),
            AppId::known("app"),
            None,
            None,
            OutboxLimits { messages, bytes },
            0,
        )
    }

    #[test]
    fn outbox_bounds_messages_and_bytes() {
        let by_count = handle(2, 1 << 20);
        let frame = Frame::from("0123456789");
        assert_eq!(by_count.deliver(&frame), Delivery::Queued);
        assert_eq!(by_count.deliver(&frame), Delivery::Queued);
        assert_eq!(by_count.deliver(&frame), Delivery::Full);
        assert_eq!(by_count.close_code(), Some(4008));
        assert_eq!(by_count.deliver(&frame), Delivery::Gone);

        let by_bytes = handle(100, 25);
        assert_eq!(by_bytes.deliver(&frame), Delivery::Queued);
        assert_eq!(by_bytes.deliver(&frame), Delivery::Queued);
        assert_eq!(by_bytes.deliver(&frame), Delivery::Full);
    }

    #[test]
    fn frames_come_out_in_order_and_capacity_is_returned() {
        let h = handle(1000, 1 << 20);
        for i in 0..100 {
            h.deliver(&Frame::from(format!("{i}")));
        }
        for i in 0..100 {
            assert_eq!(h.next_frame().unwrap().as_str(), i.to_string());
        }
        assert!(h.next_frame().is_none());
        assert!(h.outbox().frames.capacity() <= KEEP_CAPACITY);
        assert_eq!(h.outbox().bytes, 0);
    }

    #[tokio::test]
    async fn wake_reports_close_before_work() {
        let h = handle(10, 1000);
        h.deliver(&Frame::from("x"));
        assert_eq!(h.wake().await, Wake::Work);
        h.close(CloseCode::AppDisabled);
        h.close(CloseCode::SlowConsumer);
        assert_eq!(h.wake().await, Wake::Close(4003));
        assert_eq!(h.closing().await, 4003);
    }
}
