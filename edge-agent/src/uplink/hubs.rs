//! The hubs an uplink may stream to (`uplink.hub_url` and `uplink.hub_urls`)
//! and the one it tries now: after a failed connection or a broken stream the
//! next one is tried (after the usual backoff), round and round. Nothing is
//! lost or doubled by a switch: every session starts again from the buffer,
//! and the hubs share one database with its (gateway, seq) dedupe.

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Hubs {
    urls: Vec<String>,
    at: AtomicUsize,
}

impl Hubs {
    /// `urls` is never empty (the config says so).
    pub fn new(urls: Vec<String>) -> Hubs {
        Hubs {
            urls,
            at: AtomicUsize::new(0),
        }
    }

    pub fn current(&self) -> &str {
        let i = self.at.load(Ordering::Relaxed) % self.urls.len().max(1);
        self.urls.get(i).map(String::as_str).unwrap_or("")
    }

    /// Moves on to the next hub, if there is another; returns it.
    pub fn advance(&self) -> Option<&str> {
        if self.urls.len() < 2 {
            return None;
        }
        self.at.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::EDGE_UPLINK_HUB_SWITCHES_TOTAL).increment(1);
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_round_the_list() {
        let h = Hubs::new(vec!["http://a".into(), "http://b".into()]);
        assert_eq!(h.current(), "http://a");
        assert_eq!(h.advance(), Some("http://b"));
        assert_eq!(h.advance(), Some("http://a"));
        let one = Hubs::new(vec!["http://a".into()]);
        assert_eq!(one.advance(), None);
        assert_eq!(one.current(), "http://a");
    }
}
