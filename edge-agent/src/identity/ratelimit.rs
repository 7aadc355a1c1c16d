//! Brute-force brake on logins: failed attempts are counted per source
//! address; past the limit within the window, that address is refused
//! (429 with Retry-After) until the window has passed since its first
//! counted failure. Other addresses are unaffected, and a success clears
//! the address's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most; beyond it the stalest entries are forgotten
/// (an attacker rotating addresses gains nothing per address by it).
const MAX_TRACKED: usize = 10_000;

pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    /// Address -> (first failure in the window, failures since).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(retry_after)` if `addr` may not try now.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(&addr) {
            Some((first, n)) if now.duration_since(*first) < self.window => {
                if *n >= self.max_failures {
                    return Err(self.window - now.duration_since(*first));
                }
                Ok(())
            }
            Some(_) => {
                map.remove(&addr);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (first, _)| now.duration_since(*first) < self.window);
            if map.len() >= MAX_TRACKED
                && let Some(stalest) = map.iter().min_by_key(|(_, (f, _))| *f).map(|(a, _)| *a)
            {
                map.remove(&stalest);
            }
        }
        let e = map.entry(addr).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    pub fn succeeded(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_and_others_are_not() {
        let l = LoginLimiter::new(3, Duration::from_millis(300));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        let wait = l.check(a).unwrap_err();
        assert!(wait <= Duration::from_millis(300));
        assert!(l.check(b).is_ok());
        std::thread::sleep(Duration::from_millis(350));
        assert!(l.check(a).is_ok());
        l.failed(b);
        l.succeeded(b);
        assert!(l.check(b).is_ok());
    }
}
