//! Requests in flight on one pipelined connection, by transaction id, and
//! the ids of those that timed out (so their late answers are recognised as
//! late, not taken for a device inventing ids).

use std::collections::{HashMap, VecDeque};

/// Timed-out ids remembered; older ones are forgotten (an answer that late
/// then counts as unknown and drops the connection, which is what a device
/// that slow deserves).
const EXPIRED_KEPT: usize = 256;

pub struct InFlight<T> {
    next: u16,
    map: HashMap<u16, T>,
    expired: VecDeque<u16>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// An id whose request already timed out.
    Late,
    /// An id never sent, or answered already.
    Unknown,
}

impl<T> InFlight<T> {
    pub fn new() -> InFlight<T> {
        InFlight {
            next: 1,
            map: HashMap::new(),
            expired: VecDeque::new(),
        }
    }

    /// Files a request under the next id no request in flight holds.
    pub fn insert_with(&mut self, make: impl FnOnce(u16) -> T) -> u16 {
        loop {
            let tid = self.next;
            self.next = self.next.wrapping_add(1);
            if !self.map.contains_key(&tid) {
                self.expired.retain(|&t| t != tid);
                self.map.insert(tid, make(tid));
                return tid;
            }
        }
    }

    pub fn take(&mut self, tid: u16) -> Lookup<T> {
        match self.map.remove(&tid) {
            Some(t) => Lookup::Found(t),
            None if self.expired.contains(&tid) => {
                self.expired.retain(|&t| t != tid);
                Lookup::Late
            }
            None => Lookup::Unknown,
        }
    }

    /// The caller gave up on `tid`; a no-op once it was answered.
    pub fn expire(&mut self, tid: u16) {
        if self.map.remove(&tid).is_some() {
            self.expired.push_back(tid);
            if self.expired.len() > EXPIRED_KEPT {
                self.expired.pop_front();
            }
        }
    }

    pub fn drain(&mut self) -> Vec<T> {
        self.map.drain().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_taken_once_and_an_id_never_sent_is_unknown() {
        let mut f = InFlight::new();
        let a = f.insert_with(|t| t * 10);
        let b = f.insert_with(|t| t * 10);
        assert_ne!(a, b);
        assert_eq!(f.take(b), Lookup::Found(b * 10));
        assert_eq!(f.take(b), Lookup::Unknown, "a second answer to one request");
        assert_eq!(f.take(999), Lookup::Unknown);
        assert_eq!(f.take(a), Lookup::Found(a * 10));
    }

    #[test]
    fn a_timed_out_id_is_late_once_and_answered_ids_do_not_become_late() {
        let mut f = InFlight::new();
        let a = f.insert_with(|_| ());
        f.expire(a);
        assert_eq!(f.take(a), Lookup::Late);
        assert_eq!(f.take(a), Lookup::Unknown);
        let b = f.insert_with(|_| ());
        assert_eq!(f.take(b), Lookup::Found(()));
        f.expire(b); // the caller's guard runs after the answer: nothing to forget
        assert_eq!(f.take(b), Lookup::Unknown);
    }

    #[test]
    fn ids_wrap_around_and_skip_those_still_in_flight() {
        let mut f = InFlight::new();
        let held = f.insert_with(|_| ()); // id 1 stays in flight
        for _ in 0..u16::MAX {
            let t = f.insert_with(|_| ());
            assert_ne!(t, held);
            assert!(matches!(f.take(t), Lookup::Found(())));
        }
        let next = f.insert_with(|_| ());
        assert_ne!(next, held);
        assert_eq!(f.drain().len(), 2);
    }

    #[test]
    fn the_expired_memory_is_bounded() {
        let mut f = InFlight::new();
        let first = f.insert_with(|_| ());
        f.expire(first);
        for _ in 0..EXPIRED_KEPT {
            let t = f.insert_with(|_| ());
            f.expire(t);
        }
        assert_eq!(f.take(first), Lookup::Unknown);
    }
}
