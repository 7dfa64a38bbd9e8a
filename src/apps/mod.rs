//! Apps (tenants): the in-memory [`AppCache`] that the hot path reads instead of the store,
//! and [`Apps`], the service that owns their writes, rules and jobs.

mod service;

pub use service::{Apps, Parts, RESTORE_WINDOW_MS};

use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;

use crate::store::{AppRecord, AppStatus};

pub use crate::domain::check_app_id;

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

    /// Caches `app` as read from the store unless the cache holds a version at least as new
    /// (a write on this node, or a reload, may have put it meanwhile).
    pub fn put_newer(&self, app: AppRecord) {
        match self.apps.entry(app.app_id.clone()) {
            dashmap::Entry::Occupied(mut cached) if cached.get().updated_at < app.updated_at => {
                cached.insert(Arc::new(app));
            }
            dashmap::Entry::Occupied(_) => {}
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(app));
            }
        }
    }

    /// Replaces the whole cache (after a reload from the store); returns the ids of the apps
    /// that were active and are not any more (disabled, deleted or gone), whose connections
    /// must close.
    pub fn replace_all(&self, apps: Vec<AppRecord>) -> Vec<String> {
        let ids: std::collections::HashSet<String> = apps.iter().map(|a| a.app_id.clone()).collect();
        let mut stopped = Vec::new();
        for app in apps {
            if !is_active(&app) && self.get(&app.app_id).is_some_and(|was| is_active(&was)) {
                stopped.push(app.app_id.clone());
            }
            self.put(app);
        }
        self.apps.retain(|id, app| {
            let keep = ids.contains(id);
            if !keep && is_active(app) {
                stopped.push(id.clone());
            }
            keep
        });
        stopped
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
