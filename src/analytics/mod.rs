//! Per-app analytics (DESIGN §5): counters in per-minute buckets, kept exact and readable at
//! once because the hub's events are counted inline (a sink), persisted every few seconds so a
//! restart loses at most that much, and distinct users counted by HyperLogLog sketches
//! ([`distinct`]), so memory per app is fixed however many users come by (`users.total` within
//! about 1 %; `users.online` stays exact).
//!
//! In a cluster the same counters are kept per node only until the next flush, a second later,
//! which adds them to buckets shared in Redis ([`redis`]; users through Redis's own HyperLogLog,
//! `PFADD`); every node reports from those.

pub mod distinct;
pub mod redis;
mod service;

pub use service::Stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::hub::events::{HubEvent, PublishKind};
use crate::store::{AnalyticsRows, MinuteCounts, MinuteRow, SketchRow};
use distinct::{Distinct, Level};

const MINUTE_MS: i64 = 60_000;
/// The longest period kept.
pub const RETENTION_MS: i64 = 30 * 24 * 60 * MINUTE_MS;

/// A reporting period and its series resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// `1h`, `24h`, `7d` or `30d`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1h" => Some(Period::Hour),
            "24h" => Some(Period::Day),
            "7d" => Some(Period::Week),
            "30d" => Some(Period::Month),
            _ => None,
        }
    }

    /// As written in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "1h",
            Period::Day => "24h",
            Period::Week => "7d",
            Period::Month => "30d",
        }
    }

    /// Length in ms.
    pub fn length_ms(self) -> i64 {
        match self {
            Period::Hour => 60 * MINUTE_MS,
            Period::Day => 24 * 60 * MINUTE_MS,
            Period::Week => 7 * 24 * 60 * MINUTE_MS,
            Period::Month => RETENTION_MS,
        }
    }

    /// Width of one series point in ms: 1 min, 1 h, 6 h, 1 day.
    pub fn step_ms(self) -> i64 {
        match self {
            Period::Hour => MINUTE_MS,
            Period::Day => 60 * MINUTE_MS,
            Period::Week => 6 * 60 * MINUTE_MS,
            Period::Month => 24 * 60 * MINUTE_MS,
        }
    }

    /// The start of each series step of the period ending at `now`, oldest first: the last one
    /// holds `now`, the first one begins the period.
    pub fn steps(self, now: i64) -> Vec<i64> {
        let step = self.step_ms();
        let last = now - now.rem_euclid(step);
        let n = self.length_ms() / step;
        (0..n).map(|i| last - (n - 1 - i) * step).collect()
    }
}

/// One app's counters.
#[derive(Debug, Default)]
struct AppStats {
    minutes: BTreeMap<i64, MinuteCounts>,
    /// Connections open now, from the event stream.
    current: u64,
    /// Users connected now, with their connection counts.
    online: HashMap<Arc<str>, u32>,
    /// Distinct users per bucket (a single node).
    distinct: Distinct,
    /// Users seen since the last flush, with when (a cluster node; Redis counts them).
    seen_since_flush: HashMap<Arc<str>, i64>,
    dirty_minutes: HashSet<i64>,
    /// When the users online were last marked seen, ms.
    online_seen_at: i64,
}

impl AppStats {
    fn minute(&mut self, now: i64) -> &mut MinuteCounts {
        let minute = now - now.rem_euclid(MINUTE_MS);
        self.dirty_minutes.insert(minute);
        let current = self.current;
        let counts = self.minutes.entry(minute).or_default();
        // Connections held from earlier minutes count towards this minute's peak.
        counts.peak_connections = counts.peak_connections.max(current);
        counts
    }

    /// Counts `user` as seen at `now`: into the sketches on a single node, into the next flush
    /// on a `shared` (cluster) one.
    fn seen(&mut self, user: &str, now: i64, shared: bool) {
        if !shared {
            self.distinct.insert(user, now);
            return;
        }
        let user: Arc<str> =
            self.online.get_key_value(user).map_or_else(|| Arc::from(user), |(k, _)| k.clone());
        self.seen_since_flush.insert(user, now);
    }
}

/// How often users still connected are marked seen, so `users.total` of a period counts users
/// who connected before it and are still there.
const ONLINE_SEEN_EVERY_MS: i64 = 30_000;

/// What `GET /api/analytics` reports for one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub totals: MinuteCounts,
    /// Connections open now.
    pub current: u64,
    /// Most connections open at once in the period.
    pub peak_connections: u64,
    pub users_online: u64,
    pub users_total: u64,
    /// `(start ms, counts)` per step, oldest first, the current one last.
    pub series: Vec<(i64, MinuteCounts)>,
}

impl Report {
    /// Adds what `other` counted over the same period and steps (this node's counts not yet
    /// in the cluster's buckets).
    pub fn merge(&mut self, other: &Report) {
        self.totals.add(&other.totals);
        self.peak_connections = self.peak_connections.max(other.peak_connections);
        self.users_online = self.users_online.max(other.users_online);
        self.users_total = self.users_total.max(other.users_total);
        for ((t, point), (u, more)) in self.series.iter_mut().zip(&other.series) {
            if t == u {
                point.add(more);
            }
        }
    }
}

/// What one node counted for one app since its previous flush, for the cluster's buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppDelta {
    pub app_id: Arc<str>,
    /// Counts per minute (start ms); the peak is this node's.
    pub minutes: Vec<(i64, MinuteCounts)>,
    /// Users seen since, with when.
    pub seen: Vec<(Arc<str>, i64)>,
    /// Users connected to this node now.
    pub online: Vec<Arc<str>>,
    /// Connections open on this node now.
    pub current: u64,
}

/// Every app's analytics on this node.
#[derive(Debug, Default)]
pub struct Analytics {
    apps: DashMap<Arc<str>, Mutex<AppStats>>,
    /// A cluster node: distinct users go to Redis with each flush.
    shared: bool,
}

fn lock(m: &Mutex<AppStats>) -> MutexGuard<'_, AppStats> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Analytics {
    /// A cluster node's analytics: counts are flushed to Redis ([`Analytics::take_deltas`]).
    pub fn shared() -> Self {
        Self { apps: DashMap::new(), shared: true }
    }

    fn with_app<T>(&self, app_id: &str, f: impl FnOnce(&mut AppStats) -> T) -> T {
        if let Some(stats) = self.apps.get(app_id) {
            return f(&mut lock(&stats));
        }
        let stats = self.apps.entry(Arc::from(app_id)).or_default();
        f(&mut lock(&stats))
    }

    /// Counts one hub event at `now` (ms); the hub calls this inline.
    pub fn record(&self, event: &HubEvent, now: i64) {
        match event {
            HubEvent::ConnectionOpened { app_id, user_id, .. } => self.with_app(app_id, |s| {
                s.current += 1;
                s.minute(now).connections_opened += 1;
                if let Some(user) = user_id {
                    s.seen(user, now, self.shared);
                    *s.online.entry(Arc::from(user.as_str())).or_default() += 1;
                }
            }),
            HubEvent::ConnectionClosed { app_id, user_id, .. } => self.with_app(app_id, |s| {
                s.current = s.current.saturating_sub(1);
                if let Some(user) = user_id {
                    s.seen(user, now, self.shared);
                    if let Some(n) = s.online.get_mut(user.as_str()) {
                        *n -= 1;
                        if *n == 0 {
                            s.online.remove(user.as_str());
                        }
                    }
                }
            }),
            HubEvent::Published { room, kind, .. } => self.with_app(&room.app_id, |s| {
                let m = s.minute(now);
                match kind {
                    PublishKind::Broadcast => m.broadcasts += 1,
                    PublishKind::Client => m.client_events += 1,
                    PublishKind::System => {}
                }
            }),
            HubEvent::Delivered { room, delivered, .. } => {
                self.with_app(&room.app_id, |s| s.minute(now).delivered += *delivered as u64)
            }
            HubEvent::RoomOccupied { .. }
            | HubEvent::RoomVacated { .. }
            | HubEvent::MemberJoined { .. }
            | HubEvent::MemberLeft { .. }
            | HubEvent::Joined { .. }
            | HubEvent::Left { .. } => {}
        }
    }

    /// Counts a webhook delivery that ended at `now` (ms): succeeded, or failed for good.
    pub fn webhook(&self, app_id: &str, succeeded: bool, now: i64) {
        self.with_app(app_id, |s| {
            let m = s.minute(now);
            if succeeded {
                m.webhooks_delivered += 1;
            } else {
                m.webhooks_failed += 1;
            }
        });
    }

    /// Once in a while: users still connected are seen now, connections held carry into this
    /// minute's peak, and minutes older than 30 days are forgotten.
    pub fn tick(&self, now: i64) {
        for entry in self.apps.iter() {
            let mut s = lock(entry.value());
            if s.current > 0 {
                s.minute(now);
            }
            if now - s.online_seen_at >= ONLINE_SEEN_EVERY_MS {
                s.online_seen_at = now;
                let online: Vec<Arc<str>> = s.online.keys().cloned().collect();
                for user in online {
                    s.seen(&user, now, self.shared);
                }
            }
            let cutoff = now - RETENTION_MS;
            s.minutes = s.minutes.split_off(&cutoff);
            s.distinct.prune(now);
        }
    }

    /// Rows changed since the last call, for the store.
    pub fn take_dirty(&self) -> AnalyticsRows {
        let mut rows = AnalyticsRows::default();
        for entry in self.apps.iter() {
            let mut s = lock(entry.value());
            let app_id = entry.key().to_string();
            for minute in std::mem::take(&mut s.dirty_minutes) {
                if let Some(counts) = s.minutes.get(&minute) {
                    rows.minutes.push(MinuteRow { app_id: app_id.clone(), minute, counts: *counts });
                }
            }
            for (level, start, sketch) in s.distinct.take_dirty() {
                rows.sketches.push(SketchRow {
                    app_id: app_id.clone(),
                    level: level.as_u8(),
                    start,
                    expires_at: start + level.keep_ms(),
                    sketch,
                });
            }
        }
        rows
    }

    /// In a cluster: takes every app's counts since the last call, leaving only what is needed
    /// to go on counting (connections and users online).
    pub fn take_deltas(&self) -> Vec<AppDelta> {
        let mut deltas = Vec::with_capacity(self.apps.len());
        for entry in self.apps.iter() {
            let mut s = lock(entry.value());
            s.dirty_minutes.clear();
            let minutes = std::mem::take(&mut s.minutes).into_iter().collect();
            let seen = std::mem::take(&mut s.seen_since_flush).into_iter().collect();
            deltas.push(AppDelta {
                app_id: entry.key().clone(),
                minutes,
                seen,
                online: s.online.keys().cloned().collect(),
                current: s.current,
            });
        }
        deltas
    }

    /// Puts back deltas that could not be added to the cluster's buckets.
    pub fn restore(&self, deltas: Vec<AppDelta>) {
        for d in deltas {
            self.with_app(&d.app_id, |s| {
                for (minute, counts) in &d.minutes {
                    s.minutes.entry(*minute).or_default().add(counts);
                }
                for (user, seen) in d.seen {
                    let t = s.seen_since_flush.entry(user).or_default();
                    *t = (*t).max(seen);
                }
            });
        }
    }

    /// Puts back rows that could not be saved, so the next flush tries them again.
    pub fn mark_dirty(&self, rows: &AnalyticsRows) {
        for m in &rows.minutes {
            self.with_app(&m.app_id, |s| {
                s.dirty_minutes.insert(m.minute);
            });
        }
        for k in &rows.sketches {
            self.with_app(&k.app_id, |s| {
                if let Some(level) = Level::from_u8(k.level) {
                    s.distinct.mark_dirty(level, k.start);
                }
            });
        }
    }

    /// Restores what a previous run saved (before any event is counted).
    pub fn load(&self, rows: AnalyticsRows) {
        for m in rows.minutes {
            self.with_app(&m.app_id, |s| {
                s.minutes.insert(m.minute, m.counts);
            });
        }
        for k in rows.sketches {
            let loaded = Level::from_u8(k.level).is_some_and(|level| {
                self.with_app(&k.app_id, |s| s.distinct.load(level, k.start, &k.sketch))
            });
            if !loaded {
                tracing::warn!(app_id = %k.app_id, level = k.level, start = k.start, "unreadable distinct-user sketch ignored");
            }
        }
        // Stores written before the sketches kept each user's last sighting: each goes into the
        // buckets of that time, which counts it in exactly the periods it counted in before.
        for u in rows.users {
            self.with_app(&u.app_id, |s| s.distinct.insert(&u.user_id, u.last_seen));
        }
    }

    /// Forgets an app (purged).
    pub fn forget(&self, app_id: &str) {
        self.apps.remove(app_id);
    }

    /// The report of `app_id` for the `period` ending at `now`, the current minute included.
    pub fn report(&self, app_id: &str, period: Period, now: i64) -> Report {
        let step = period.step_ms();
        let mut series: Vec<(i64, MinuteCounts)> =
            period.steps(now).into_iter().map(|t| (t, MinuteCounts::default())).collect();
        let first_step = series[0].0;
        let mut report = Report::default();
        let Some(stats) = self.apps.get(app_id) else {
            report.series = series;
            return report;
        };
        let s = lock(&stats);
        for (&minute, c) in s.minutes.range(first_step..) {
            report.totals.add(c);
            let slot = ((minute - first_step) / step) as usize;
            if let Some((_, point)) = series.get_mut(slot) {
                point.add(c);
            }
        }
        report.current = s.current;
        report.peak_connections = report.totals.peak_connections.max(s.current);
        report.users_online = s.online.len() as u64;
        report.users_total = s.distinct.count(period, first_step);
        report.series = series;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::registry::RoomKey;
    use crate::protocol::{EventName, RoomName};

    fn opened(app: &str, user: Option<&str>) -> HubEvent {
        HubEvent::ConnectionOpened {
            app_id: app.into(),
            connection_id: "c".into(),
            user_id: user.map(Into::into),
        }
    }

    fn closed(app: &str, user: Option<&str>) -> HubEvent {
        HubEvent::ConnectionClosed {
            app_id: app.into(),
            connection_id: "c".into(),
            user_id: user.map(Into::into),
        }
    }

    /// A publication of `app` that reached `delivered` queues, recorded at `now`: the hub's
    /// fan-out reports the deliveries, then the publisher the publication.
    fn publish(a: &Analytics, app: &str, kind: PublishKind, delivered: usize, now: i64) {
        let room = RoomKey { app_id: crate::domain::AppId::known(app), room: RoomName::parse("r").unwrap() };
        a.record(&HubEvent::Delivered { room: room.clone(), delivered, dropped: 0 }, now);
        let event = EventName::parse("e").unwrap();
        a.record(
            &HubEvent::Published { room, event, kind, data: None, timestamp: 0, sender: None, offset: 0 },
            now,
        );
    }

    #[test]
    fn counts_by_period_and_series_step() {
        let a = Analytics::default();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MINUTE_MS);
        a.record(&opened("x", Some("u1")), t0);
        a.record(&opened("x", Some("u1")), t0 + 1);
        a.record(&opened("x", Some("u2")), t0 + 2);
        publish(&a, "x", PublishKind::Broadcast, 3, t0 + 3);
        publish(&a, "x", PublishKind::Client, 2, t0 + 5 * MINUTE_MS);
        publish(&a, "x", PublishKind::System, 2, t0 + 5 * MINUTE_MS);
        a.record(&closed("x", Some("u2")), t0 + 6 * MINUTE_MS);
        a.record(&opened("other", None), t0);
        let now = t0 + 10 * MINUTE_MS;
        let r = a.report("x", Period::Hour, now);
        assert_eq!(r.totals.connections_opened, 3);
        assert_eq!((r.totals.broadcasts, r.totals.client_events, r.totals.delivered), (1, 1, 7));
        assert_eq!((r.peak_connections, r.users_online, r.users_total), (3, 1, 2));
        assert_eq!(r.series.len(), 60);
        assert_eq!(r.series.last().unwrap().0, now - now % MINUTE_MS);
        let at = |t: i64| r.series.iter().find(|(s, _)| *s == t).unwrap().1;
        assert_eq!((at(t0).connections_opened, at(t0).peak_connections, at(t0).delivered), (3, 3, 3));
        assert_eq!(at(t0 + 5 * MINUTE_MS).delivered, 4);
        // A day later the hour is empty, the month still holds it all.
        let later = now + 24 * 60 * MINUTE_MS;
        assert_eq!(a.report("x", Period::Hour, later).totals, MinuteCounts::default());
        let month = a.report("x", Period::Month, later);
        assert_eq!((month.totals.connections_opened, month.series.len()), (3, 30));
        assert_eq!(a.report("nobody", Period::Day, now).series.len(), 24);
    }

    #[test]
    fn dirty_rows_round_trip_through_load() {
        let a = Analytics::default();
        a.record(&opened("x", Some("u1")), 120_000);
        let rows = a.take_dirty();
        // One minute, and the user's bucket at each of the four levels.
        assert_eq!((rows.minutes.len(), rows.sketches.len()), (1, 4));
        assert_eq!(a.take_dirty(), AnalyticsRows::default(), "nothing changed since");
        let b = Analytics::default();
        b.load(rows);
        let r = b.report("x", Period::Hour, 130_000);
        assert_eq!((r.totals.connections_opened, r.users_total, r.users_online), (1, 1, 0));
    }

    #[test]
    fn legacy_user_rows_fill_the_sketches_of_their_time() {
        let a = Analytics::default();
        let day = 24 * 60 * MINUTE_MS;
        let now = 40 * day;
        let user =
            |id: &str, last_seen| crate::store::UserRow { app_id: "x".into(), user_id: id.into(), last_seen };
        a.load(AnalyticsRows {
            users: vec![
                user("recent", now - 10 * MINUTE_MS),
                user("yesterday", now - day - MINUTE_MS),
                user("old", now - 20 * day),
            ],
            ..Default::default()
        });
        assert_eq!(a.report("x", Period::Hour, now).users_total, 1);
        assert_eq!(a.report("x", Period::Week, now).users_total, 2);
        assert_eq!(a.report("x", Period::Month, now).users_total, 3);
        // They are saved as sketches (and the store then drops the legacy rows).
        assert!(a.take_dirty().sketches.len() >= 9);
    }

    #[test]
    fn deltas_leave_only_what_counting_needs_and_come_back_when_unsent() {
        let a = Analytics::shared();
        a.record(&opened("x", Some("u1")), 120_000);
        publish(&a, "x", PublishKind::Broadcast, 1, 125_000);
        let first = a.take_deltas();
        assert_eq!(first.len(), 1);
        let d = &first[0];
        assert_eq!(
            (d.minutes.len(), d.minutes[0].1.connections_opened, d.minutes[0].1.broadcasts),
            (1, 1, 1)
        );
        assert_eq!((d.seen.len(), d.online.len(), d.current), (1, 1, 1));
        let again = a.take_deltas();
        assert!(again[0].minutes.is_empty() && again[0].seen.is_empty(), "taken once");
        assert_eq!((again[0].online.len(), again[0].current), (1, 1), "still connected");
        // A failed flush puts them back, added to what was counted since.
        publish(&a, "x", PublishKind::Broadcast, 2, 126_000);
        a.restore(first);
        let merged = a.take_deltas();
        let counts = merged[0].minutes[0].1;
        assert_eq!((counts.broadcasts, counts.delivered, counts.connections_opened), (2, 3, 1));
        assert_eq!(merged[0].seen, vec![(Arc::from("u1"), 120_000)]);
    }
}
