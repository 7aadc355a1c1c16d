//! What one live-stream subscriber asked to see (twins, a subtree, kinds)
//! and may see (its sites).

use super::index::{TwinIndex, TwinRef};
use std::collections::HashSet;

/// Twin kinds (the `kind` check of `twins`, migration 0008).
pub const KINDS: [&str; 6] = ["site", "area", "bench", "gateway", "instrument", "sample"];

/// Most twins one `twin=` filter may name.
pub const MAX_TWINS: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `twin=`: these twins (None: not asked).
    pub twins: Option<HashSet<String>>,
    /// `subtree=`: this twin and everything below it.
    pub subtree: Option<String>,
    /// `kind=`: twins of these kinds only (None: every kind).
    pub kinds: Option<HashSet<String>>,
    /// The caller's sites (None: every site).
    pub sites: Option<Vec<String>>,
    /// Members of the subtree, as of `generation` of the index.
    members: HashSet<String>,
    generation: Option<u64>,
}

impl Filter {
    pub fn new(
        twins: Option<HashSet<String>>,
        subtree: Option<String>,
        kinds: Option<HashSet<String>>,
        sites: Option<Vec<String>>,
    ) -> Filter {
        Filter {
            twins,
            subtree,
            kinds,
            sites,
            ..Filter::default()
        }
    }

    /// Brings the subtree's members up to date when the twin graph changed
    /// since they were read (a `Twin` event emptied the index).
    pub async fn refresh(&mut self, index: &TwinIndex) -> Result<(), sqlx::Error> {
        let Some(root) = &self.subtree else {
            return Ok(());
        };
        let generation = index.generation();
        if self.generation == Some(generation) {
            return Ok(());
        }
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT d.twin_id FROM twin_descendants($1, now()) d
             JOIN twins t ON t.twin_id = d.twin_id WHERE t.deleted_at IS NULL",
        )
        .bind(root)
        .fetch_all(index.pool())
        .await?;
        self.members = ids.into_iter().collect();
        self.generation = Some(generation);
        Ok(())
    }

    /// Whether events about `t` go to this subscriber.
    pub fn wants(&self, t: &TwinRef) -> bool {
        if let Some(k) = &self.kinds
            && !k.contains(&t.kind)
        {
            return false;
        }
        if let Some(sites) = &self.sites
            && !t.site.as_ref().is_some_and(|s| sites.contains(s))
        {
            return false;
        }
        match (&self.twins, &self.subtree) {
            (None, None) => true,
            (twins, _) => {
                twins.as_ref().is_some_and(|s| s.contains(&t.twin_id))
                    || (self.subtree.is_some() && self.members.contains(&t.twin_id))
            }
        }
    }

    /// The twins this filter names outright, when that is a short list
    /// (cheaper to look up than to scan a batch's twins).
    pub fn named(&self) -> Option<&HashSet<String>> {
        match (&self.twins, &self.subtree) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, kind: &str, site: Option<&str>) -> TwinRef {
        TwinRef {
            twin_id: id.into(),
            kind: kind.into(),
            site: site.map(str::to_string),
        }
    }

    #[test]
    fn twins_kinds_and_sites_narrow_what_is_seen() {
        let all = Filter::default();
        assert!(all.wants(&t("a", "instrument", None)));
        let named = Filter::new(Some(["a".to_string()].into()), None, None, None);
        assert!(named.wants(&t("a", "instrument", None)));
        assert!(!named.wants(&t("b", "instrument", None)));
        let kinds = Filter::new(None, None, Some(["gateway".to_string()].into()), None);
        assert!(!kinds.wants(&t("a", "instrument", None)));
        assert!(kinds.wants(&t("g", "gateway", None)));
        let scoped = Filter::new(None, None, None, Some(vec!["s1".into()]));
        assert!(scoped.wants(&t("a", "instrument", Some("s1"))));
        assert!(!scoped.wants(&t("b", "instrument", Some("s2"))));
        // Outside every site: only unscoped callers see it.
        assert!(!scoped.wants(&t("c", "instrument", None)));
        // A subtree not read yet holds nothing.
        let sub = Filter::new(None, Some("s1".into()), None, None);
        assert!(!sub.wants(&t("a", "instrument", Some("s1"))));
    }
}
