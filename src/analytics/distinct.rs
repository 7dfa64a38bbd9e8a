//! Distinct users per period in fixed memory: HyperLogLog sketches (Cloudflare's
//! `cardinality-estimator`, 2^14 six-bit registers: about 0.8 % standard error, at most 12 KiB a
//! sketch however many users, and a few bytes while a sketch holds few).
//!
//! A user seen at `t` goes into one sketch of each level (the 5-minute, hour, 6-hour and day
//! buckets holding `t`); a report merges the buckets of the level its period uses that overlap
//! the period. Each level keeps just enough buckets for its longest period, so an app holds at
//! most 98 sketches.

use std::collections::{BTreeMap, HashSet};

use cardinality_estimator::CardinalityEstimator;

use super::Period;

/// One bucket's distinct users.
pub type Sketch = CardinalityEstimator<str, wyhash::WyHash, 14, 6>;

const MINUTE_MS: i64 = 60_000;

/// A bucket width, with how long its buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    FiveMinutes = 0,
    Hour = 1,
    SixHours = 2,
    Day = 3,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 4] = [Level::FiveMinutes, Level::Hour, Level::SixHours, Level::Day];

    /// Bucket width in ms.
    pub fn width_ms(self) -> i64 {
        match self {
            Level::FiveMinutes => 5 * MINUTE_MS,
            Level::Hour => 60 * MINUTE_MS,
            Level::SixHours => 6 * 60 * MINUTE_MS,
            Level::Day => 24 * 60 * MINUTE_MS,
        }
    }

    /// How long a bucket is kept after it started: its longest period and one bucket more.
    pub fn keep_ms(self) -> i64 {
        let longest = match self {
            Level::FiveMinutes => Period::Hour,
            Level::Hour => Period::Day,
            Level::SixHours => Period::Week,
            Level::Day => Period::Month,
        };
        longest.length_ms() + self.width_ms()
    }

    /// The level a period's report merges.
    pub fn of(period: Period) -> Level {
        match period {
            Period::Hour => Level::FiveMinutes,
            Period::Day => Level::Hour,
            Period::Week => Level::SixHours,
            Period::Month => Level::Day,
        }
    }

    /// The stored number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// From the stored number.
    pub fn from_u8(n: u8) -> Option<Level> {
        Level::ALL.get(usize::from(n)).copied()
    }

    /// Start of the bucket holding `t`.
    pub fn start(self, t: i64) -> i64 {
        t - t.rem_euclid(self.width_ms())
    }
}

/// One app's distinct-user sketches.
#[derive(Debug, Default)]
pub struct Distinct {
    buckets: BTreeMap<(Level, i64), Sketch>,
    /// Buckets changed since the last save.
    dirty: HashSet<(Level, i64)>,
}

impl Distinct {
    /// Counts `user` as seen at `t` (ms).
    pub fn insert(&mut self, user: &str, t: i64) {
        for level in Level::ALL {
            let bucket = (level, level.start(t));
            self.buckets.entry(bucket).or_default().insert(user);
            self.dirty.insert(bucket);
        }
    }

    /// Distinct users seen in `period` from `since` (ms) on: the buckets of the period's level
    /// that overlap it, merged.
    pub fn count(&self, period: Period, since: i64) -> u64 {
        let level = Level::of(period);
        let first = level.start(since);
        let mut union = Sketch::new();
        for (_, sketch) in self.buckets.range((level, first)..=(level, i64::MAX)) {
            union.merge(sketch);
        }
        union.estimate() as u64
    }

    /// Forgets buckets past their level's keep time.
    pub fn prune(&mut self, now: i64) {
        self.buckets.retain(|(level, start), _| start + level.keep_ms() > now);
        let buckets = &self.buckets;
        self.dirty.retain(|b| buckets.contains_key(b));
    }

    /// The buckets changed since the last call, serialized; marks them saved.
    pub fn take_dirty(&mut self) -> Vec<(Level, i64, String)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for bucket in std::mem::take(&mut self.dirty) {
            if let Some(sketch) = self.buckets.get(&bucket) {
                let text = serde_json::to_string(sketch).expect("sketches serialize");
                out.push((bucket.0, bucket.1, text));
            }
        }
        out
    }

    /// Marks a bucket as changed again (its save failed).
    pub fn mark_dirty(&mut self, level: Level, start: i64) {
        self.dirty.insert((level, start));
    }

    /// Restores a saved bucket; `false` when the text is not a sketch (it is then ignored).
    pub fn load(&mut self, level: Level, start: i64, text: &str) -> bool {
        match serde_json::from_str::<Sketch>(text) {
            Ok(sketch) => {
                self.buckets.entry((level, start)).or_default().merge(&sketch);
                true
            }
            Err(_) => false,
        }
    }

    /// Sketches held, and their heap bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.buckets.len(), self.buckets.values().map(Sketch::size_of).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * MINUTE_MS;

    #[test]
    fn counts_within_two_percent_in_fixed_memory() {
        let mut d = Distinct::default();
        let now = 40 * DAY;
        for n in 0..200_000 {
            d.insert(&format!("user-{n}"), now - (n % 600) * MINUTE_MS);
        }
        // Every user was seen in the last 10 hours: each period counts them all.
        for period in [Period::Day, Period::Week, Period::Month] {
            let got = d.count(period, now - period.length_ms()) as f64;
            let error = (got - 200_000.0).abs() / 200_000.0;
            assert!(error < 0.02, "{period:?}: {got} ({:.2} %)", error * 100.0);
        }
        // The last hour saw 20,000 of them (minutes 0..60 of each 600).
        let hour = d.count(Period::Hour, now - Period::Hour.length_ms()) as f64;
        // Five-minute buckets: the window may start up to 5 minutes early.
        assert!((hour - 20_000.0).abs() / 20_000.0 < 0.02 + 5.0 / 60.0, "{hour}");
        d.prune(now);
        let (sketches, bytes) = d.size();
        assert!(sketches <= 98, "{sketches}");
        // At most 12 KiB of registers a sketch, whatever the number of users.
        assert!(bytes <= sketches * 12_400, "{bytes} bytes in {sketches} sketches");
        // Repeats do not count twice.
        for n in 0..1000 {
            d.insert(&format!("user-{n}"), now);
        }
        let again = d.count(Period::Month, 0) as f64;
        assert!((again - 200_000.0).abs() / 200_000.0 < 0.02, "{again}");
    }

    #[test]
    fn small_counts_are_exact_and_old_buckets_go() {
        let mut d = Distinct::default();
        for user in ["a", "b", "c", "a"] {
            d.insert(user, 10 * DAY);
        }
        assert_eq!(d.count(Period::Hour, 10 * DAY - Period::Hour.length_ms()), 3);
        d.insert("d", 10 * DAY + 2 * 60 * MINUTE_MS);
        assert_eq!(d.count(Period::Hour, 10 * DAY + 70 * MINUTE_MS), 1, "only d in the last hour");
        assert_eq!(d.count(Period::Day, 10 * DAY), 4);
        d.prune(10 * DAY + 2 * DAY);
        assert_eq!(d.count(Period::Day, 11 * DAY), 0, "hour buckets past a day are gone");
        assert_eq!(d.count(Period::Month, 0), 4, "day buckets stay a month");
        d.prune(45 * DAY);
        assert_eq!(d.size().0, 0);
    }

    #[test]
    fn sketches_round_trip_and_bad_text_is_ignored() {
        let mut d = Distinct::default();
        for n in 0..5000 {
            d.insert(&format!("u{n}"), DAY);
        }
        let saved = d.take_dirty();
        assert_eq!(saved.len(), 4);
        assert!(d.take_dirty().is_empty(), "nothing changed since");
        let mut restored = Distinct::default();
        for (level, start, text) in &saved {
            assert!(restored.load(*level, *start, text));
        }
        assert_eq!(restored.count(Period::Month, 0), d.count(Period::Month, 0));
        assert!(!restored.load(Level::Day, 0, "[12345,null]"));
        assert!(!restored.load(Level::Day, 0, "not json"));
    }
}
