//! Apps (tenants) and the in-memory [`AppCache`] that the hot path reads instead of the store.

use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;

use crate::store::{AppRecord, AppStatus};

/// Checks an `app_id`: `[a-z0-9][a-z0-9-]{2,63}`.
pub fn check_app_id(s: &str) -> Result<(), String> {
    let ok_len = (3..=64).contains(&s.len());
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err("must be 3 to 64 characters of a-z, 0-9 and -, starting with a letter or digit".into())
    }
}

/// A fresh `app_id`: `app-` and 12 random lower-case letters and digits.
pub fn generate_app_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..12).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("app-{tail}")
}

/// Whether an app may be used right now (not disabled, not deleted).
pub fn is_active(app: &AppRecord) -> bool {
    app.status == AppStatus::Enabled && app.deleted_at.is_none()
}

/// Every app by id, deleted ones included. Writers update it right after the store accepted a
/// change.
#[derive(Debug, Default)]
pub struct AppCache {
    apps: DashMap<String, Arc<AppRecord>>,
}

impl AppCache {
    /// The app with this id, deleted or not.
    pub fn get(&self, app_id: &str) -> Option<Arc<AppRecord>> {
        self.apps.get(app_id).map(|a| a.clone())
    }

    /// Inserts or replaces one app.
    pub fn put(&self, app: AppRecord) {
        self.apps.insert(app.app_id.clone(), Arc::new(app));
    }

    /// Replaces the whole cache (after a reload from the store).
    pub fn replace_all(&self, apps: Vec<AppRecord>) {
        let ids: std::collections::HashSet<String> = apps.iter().map(|a| a.app_id.clone()).collect();
        for app in apps {
            self.put(app);
        }
        self.apps.retain(|id, _| ids.contains(id));
    }

    /// Up to `limit` apps with ids after `after`, in id order.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        include_deleted: bool,
    ) -> (Vec<Arc<AppRecord>>, bool) {
        let mut apps: Vec<Arc<AppRecord>> = self
            .apps
            .iter()
            .filter(|a| include_deleted || a.deleted_at.is_none())
            .filter(|a| after.is_none_or(|after| a.app_id.as_str() > after))
            .map(|a| a.clone())
            .collect();
        apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        let more = apps.len() > limit;
        apps.truncate(limit);
        (apps, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids() {
        for ok in ["abc", "my-app-123", "0ab", &"a".repeat(64)] {
            assert!(check_app_id(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "-abc", "ABC", "a_b", "app id", &"a".repeat(65), ""] {
            assert!(check_app_id(bad).is_err(), "{bad}");
        }
        for _ in 0..50 {
            check_app_id(&generate_app_id()).unwrap();
        }
    }
}
