//! A room as a stream (DESIGN §11): its epoch, and on a node that assigns the offsets (a single
//! node) the events it retains for clients that come back. The registry keeps one [`History`]
//! per room, under the room's lock, so an offset, its frame, its place in the history and its
//! delivery are one step.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Frame;

/// Bytes a retained event costs beyond its frame (its entry and the frame's header).
pub const ENTRY_OVERHEAD: usize = 64;
/// Bytes a room that retains anything costs beyond its events (a room kept for its history
/// alone: its entry, its key, its state).
pub const ROOM_OVERHEAD: usize = 1024;

pub use crate::protocol::Since;

/// Why a recovery replays nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// Another incarnation of the stream: offsets restarted or history was lost (also an
    /// offset ahead of the room's).
    EpochChanged,
    /// Some of the missed events are no longer kept (beyond `size`, past `ttl_s`, or evicted).
    TooOld,
    /// The app keeps no history.
    HistoryDisabled,
}

impl NotRecovered {
    /// The `reason` of a `subscribed` frame.
    pub fn as_str(self) -> &'static str {
        match self {
            NotRecovered::EpochChanged => "epoch_changed",
            NotRecovered::TooOld => "too_old",
            NotRecovered::HistoryDisabled => "history_disabled",
        }
    }
}

/// How much of a room's stream to keep: the app's `history` at the time of a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    /// Events; 0 keeps none.
    pub size: usize,
    /// How long each is kept, in ms.
    pub ttl_ms: i64,
}

/// Where a room's stream stands for a joining connection, and what it missed.
#[derive(Debug, Clone, Default)]
pub struct StreamRead {
    pub epoch: Arc<str>,
    /// The room's last offset: the joiner gets every event after it live.
    pub offset: u64,
    /// Asked with `since`: the frames after it (oldest first), or why there are none.
    pub recovery: Option<Result<Vec<Frame>, NotRecovered>>,
}

/// A retained event as the history route shows it.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    pub event: String,
    pub data: Box<serde_json::value::RawValue>,
    pub offset: u64,
    pub timestamp: i64,
}

impl HistoryEvent {
    /// Read back from its `event` frame (the history keeps frames, shared with the fan-out).
    pub fn from_frame(frame: &Frame) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct EventFrame<'a> {
            event: String,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
            offset: u64,
            timestamp: i64,
        }
        let f: EventFrame<'_> = serde_json::from_str(frame.as_str()).ok()?;
        Some(Self { event: f.event, data: f.data.to_owned(), offset: f.offset, timestamp: f.timestamp })
    }
}

/// One retained event.
#[derive(Debug)]
pub struct Kept {
    pub offset: u64,
    /// When it was published (ms).
    pub at: i64,
    pub frame: Frame,
}

/// The events a room retains, oldest first; offsets are contiguous.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Kept>,
    bytes: usize,
    /// When the room last had an event published (for eviction order).
    pub last_publish_ms: i64,
}

/// The cost of one retained frame.
fn cost(frame: &Frame) -> usize {
    frame.len() + ENTRY_OVERHEAD
}

impl History {
    /// Bytes retained.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps one event as `keep` says (dropping the oldest beyond its size); returns the change
    /// in retained bytes. With `keep.size == 0` the history is emptied: offsets must stay
    /// contiguous in it.
    pub fn append(&mut self, offset: u64, at: i64, frame: &Frame, keep: Keep) -> isize {
        let before = self.bytes as isize;
        self.last_publish_ms = at;
        if keep.size == 0 {
            self.events.clear();
            self.bytes = 0;
            return -before;
        }
        if self.events.is_empty() {
            self.bytes += ROOM_OVERHEAD;
        }
        self.bytes += cost(frame);
        self.events.push_back(Kept { offset, at, frame: frame.clone() });
        while self.events.len() > keep.size {
            self.drop_oldest();
        }
        self.bytes as isize - before
    }

    fn drop_oldest(&mut self) -> usize {
        match self.events.pop_front() {
            Some(kept) => {
                let mut freed = cost(&kept.frame);
                if self.events.is_empty() {
                    freed += ROOM_OVERHEAD;
                }
                self.bytes -= freed;
                freed
            }
            None => 0,
        }
    }

    /// Drops events published before `cutoff` (ms); returns the bytes freed.
    pub fn expire(&mut self, cutoff: i64) -> usize {
        let mut freed = 0;
        while self.events.front().is_some_and(|k| k.at < cutoff) {
            freed += self.drop_oldest();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        freed
    }

    /// Drops the oldest events until at least `wanted` bytes are freed or none is left; returns
    /// the bytes freed.
    pub fn evict(&mut self, wanted: usize) -> usize {
        let mut freed = 0;
        while freed < wanted && !self.events.is_empty() {
            freed += self.drop_oldest();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        freed
    }

    /// What a client that left at `since` missed, the stream being at `offset` in `epoch` and the
    /// app keeping `keep` now (`now` in ms): every frame after `since.offset`, or why not.
    pub fn recover(
        &self,
        epoch: &str,
        offset: u64,
        since: &Since,
        keep: Keep,
        now: i64,
    ) -> Result<Vec<Frame>, NotRecovered> {
        if since.epoch != epoch || since.offset > offset {
            return Err(NotRecovered::EpochChanged);
        }
        if since.offset == offset {
            return Ok(Vec::new());
        }
        if keep.size == 0 {
            return Err(NotRecovered::HistoryDisabled);
        }
        let missed = self.after(since.offset);
        // The first missed event must still be kept, and within its time.
        match missed.first() {
            Some(first) if first.offset == since.offset + 1 && first.at >= now - keep.ttl_ms => {
                Ok(missed.iter().map(|k| k.frame.clone()).collect())
            }
            _ => Err(NotRecovered::TooOld),
        }
    }

    /// The retained events after `since` (oldest first) that are younger than `ttl_ms` at
    /// `now`: at most `limit`, and whether none after `since` is missing.
    pub fn page(&self, since: u64, limit: usize, ttl_ms: i64, now: i64) -> (Vec<&Kept>, bool) {
        let fresh: Vec<&Kept> = self.after(since).into_iter().filter(|k| k.at >= now - ttl_ms).collect();
        let complete = match (fresh.first(), self.events.back()) {
            (Some(first), _) => first.offset == since + 1,
            // Nothing fresh after `since`: complete only when nothing was published after it.
            (None, Some(last)) => last.offset <= since,
            (None, None) => true,
        };
        (fresh.into_iter().take(limit).collect(), complete)
    }

    /// The retained events after offset `since`.
    fn after(&self, since: u64) -> Vec<&Kept> {
        let Some(first) = self.events.front() else { return Vec::new() };
        let skip = since.saturating_add(1).saturating_sub(first.offset) as usize;
        self.events.iter().skip(skip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Frame {
        Frame::from(format!("{{\"offset\":{n}}}"))
    }

    fn since(offset: u64) -> Since {
        Since { offset, epoch: "e1".into() }
    }

    const KEEP: Keep = Keep { size: 3, ttl_ms: 1_000 };

    fn history(offsets: std::ops::RangeInclusive<u64>) -> History {
        let mut h = History::default();
        for n in offsets {
            h.append(n, n as i64 * 10, &frame(n), KEEP);
        }
        h
    }

    #[test]
    fn keeps_the_last_size_events_and_counts_their_bytes() {
        let h = history(1..=5);
        assert_eq!(h.after(0).iter().map(|k| k.offset).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(
            h.bytes(),
            ROOM_OVERHEAD + (0..3).map(|n| frame(n + 3).len() + ENTRY_OVERHEAD).sum::<usize>()
        );
        let mut off = history(1..=2);
        let before = off.bytes() as isize;
        assert_eq!(off.append(3, 30, &frame(3), Keep::default()), -before);
        assert!(off.is_empty(), "size 0 keeps nothing");
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed_or_says_why_not() {
        let h = history(1..=5);
        let got = h.recover("e1", 5, &since(3), KEEP, 60).unwrap();
        assert_eq!(got, [frame(4), frame(5)]);
        assert_eq!(h.recover("e1", 5, &since(5), KEEP, 60).unwrap(), Vec::<Frame>::new());
        assert_eq!(h.recover("e2", 5, &since(3), KEEP, 60), Err(NotRecovered::EpochChanged));
        assert_eq!(h.recover("e1", 5, &since(9), KEEP, 60), Err(NotRecovered::EpochChanged), "ahead");
        assert_eq!(h.recover("e1", 5, &since(1), KEEP, 60), Err(NotRecovered::TooOld), "2 is gone");
        assert_eq!(h.recover("e1", 5, &since(3), KEEP, 2_000), Err(NotRecovered::TooOld), "4 expired");
        let off = Keep { size: 0, ttl_ms: 1_000 };
        assert_eq!(h.recover("e1", 5, &since(3), off, 60), Err(NotRecovered::HistoryDisabled));
    }

    #[test]
    fn pages_report_gaps_and_expiry_and_eviction_free_bytes() {
        let mut h = history(1..=5);
        let (page, complete) = h.page(3, 10, 1_000, 60);
        assert_eq!((page.len(), complete), (2, true));
        let (page, complete) = h.page(0, 1, 1_000, 60);
        assert_eq!((page[0].offset, complete), (3, false), "1 and 2 are gone");
        assert!(h.page(5, 10, 1_000, 60).1, "nothing after the last");
        let bytes = h.bytes();
        assert_eq!(h.expire(45), bytes - h.bytes());
        assert_eq!(h.after(0).len(), 1, "3 and 4 expired");
        assert!(h.evict(1) > 0 && h.is_empty() && h.bytes() == 0);
    }
}
