//! The read cache behind GetUser-by-id and authentication: a `DashMap` of users, kept
//! coherent with this process's writes.
//!
//! Coherence rules:
//! - every write stores the row it got back from the database ([`UserCache::store`]); a
//!   row only replaces an older `version`, so two racing writers cannot leave the older one;
//! - a read that missed fills the cache with [`UserCache::fill`] only if no
//!   [`UserCache::clear`] happened since the read began (the generation counter), so a
//!   read that started before an eviction cannot bring back what it evicted.
//!
//! It sees only this process's writes, so it is enabled only where this process is the
//! single writer (SQLite by default); see `--user-cache` for PostgreSQL deployments.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use dashmap::{mapref::entry::Entry, DashMap};

use crate::model::User;

/// Users by id.
pub struct UserCache {
    map: DashMap<u64, Arc<User>>,
    generation: AtomicU64,
    capacity: usize,
}

impl UserCache {
    /// A cache of at most `capacity` users (it is emptied when full, an O(1)-amortized
    /// policy that keeps coherence trivial).
    pub fn new(capacity: usize) -> UserCache {
        UserCache {
            map: DashMap::new(),
            generation: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// The cached user, which may be a deleted tombstone.
    pub fn get(&self, id: u64) -> Option<Arc<User>> {
        self.map.get(&id).map(|u| u.clone())
    }

    /// Read before a database read that may fill the cache.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a user read from the database, unless the cache was cleared since
    /// `generation` was read or a newer version is already cached.
    pub fn fill(&self, generation: u64, user: Arc<User>) {
        self.put(Some(generation), user)
    }

    /// Caches the row a write returned.
    pub fn store(&self, user: Arc<User>) {
        self.put(None, user)
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.clear();
    }

    fn put(&self, generation: Option<u64>, user: Arc<User>) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&user.id) {
            self.clear();
        }
        // The generation is checked while the entry's shard is locked, and clear() bumps
        // it before removing entries, so a stale fill either sees the bump or is removed.
        match self.map.entry(user.id) {
            Entry::Occupied(mut e) => {
                if e.get().version < user.version && generation.is_none_or(|g| g == self.generation()) {
                    e.insert(user);
                }
            }
            Entry::Vacant(e) => {
                if generation.is_none_or(|g| g == self.generation()) {
                    e.insert(user);
                }
            }
        }
    }

    /// Number of cached users.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, version: i64) -> Arc<User> {
        Arc::new(crate::model::sample_user(id, version))
    }

    #[test]
    fn older_versions_never_replace_newer() {
        let c = UserCache::new(10);
        c.store(user(1, 3));
        c.store(user(1, 2));
        assert_eq!(c.get(1).unwrap().version, 3);
        c.fill(c.generation(), user(1, 1));
        assert_eq!(c.get(1).unwrap().version, 3);
    }

    #[test]
    fn a_fill_that_straddles_a_clear_is_dropped() {
        let c = UserCache::new(10);
        let g = c.generation();
        c.clear();
        c.fill(g, user(1, 1));
        assert!(c.get(1).is_none());
    }

    #[test]
    fn capacity_is_bounded() {
        let c = UserCache::new(3);
        for i in 0..10 {
            c.store(user(i, 1));
        }
        assert!(c.len() <= 3);
    }
}
