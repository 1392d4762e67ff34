//! A replica's in-memory maps of bounded size (the assignment pointers and
//! opened grants of `repo`, the narrowed tokens of `narrow`): a map behind
//! a short lock that never outgrows its capacity. Reaching it drops the
//! entries no longer alive, and if that frees nothing, all of them — a
//! burst of store reads or provider calls, never a wrong answer, since
//! every user of these maps can do without an entry.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

pub(crate) struct Bounded<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

/// One key from several ids, unambiguous whatever they contain (each part
/// length-prefixed); the key of a list's first parts is a prefix of the
/// keys that extend it.
pub(crate) fn key(parts: &[&str]) -> String {
    let mut k = String::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        k.push_str(&p.len().to_string());
        k.push(':');
        k.push_str(p);
    }
    k
}

impl<K: Eq + Hash, V> Bounded<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, V>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `read` makes of the entry, if there is one.
    pub(crate) fn get<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().get(key).and_then(read)
    }

    /// Inserts or replaces; at capacity, first keeps only the entries
    /// `alive` keeps, then, if still full, none.
    pub(crate) fn insert(&self, key: K, value: V, mut alive: impl FnMut(&V) -> bool) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, v| alive(v));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, value);
    }

    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }

    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.lock().retain(|k, v| keep(k, v));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_be_confused_whatever_the_ids_contain() {
        let a = key(&["rt", "inc", "1:x"]);
        let b = key(&["rt", "inc1", ":x"]);
        let c = key(&["rt3:inc", "", "x"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        assert!(a.starts_with(&key(&["rt", "inc"])));
        assert!(!b.starts_with(&key(&["rt", "inc"])));
    }

    #[test]
    fn at_capacity_the_dead_go_first_then_all() {
        let m: Bounded<u32, bool> = Bounded::new(4);
        for i in 0..4 {
            m.insert(i, i % 2 == 0, |alive| *alive);
        }
        // full: the two dead ones go, the live ones stay
        m.insert(10, true, |alive| *alive);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&0, |v| Some(*v)), Some(true));
        assert_eq!(m.get(&1, |v| Some(*v)), None);
        // replacing a key never prunes
        m.insert(0, true, |_| false);
        m.insert(12, true, |alive| *alive);
        assert_eq!(m.len(), 4);
        // full of live ones: all go but the newest
        m.insert(14, true, |alive| *alive);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&14, |v| Some(*v)), Some(true));
    }
}
