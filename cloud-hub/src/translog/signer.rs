//! The log's signing key and its tree heads. The key is made at the hub's
//! first start and kept in `translog_key` (like the token keys in
//! `signing_keys`, so every replica signs with it); it never rotates, being
//! the log's identity. A head is signed when someone asks for it and the
//! tree has grown since the last one: a new STH for every tree size anyone
//! sees, and no signing work while nobody looks.

use super::LogError;
use super::sth::{self, SignedTreeHead};
use super::store;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sqlx::{PgConnection, PgPool};
use std::sync::Mutex;

pub struct LogSigner {
    pair: Ed25519KeyPair,
    public: [u8; 32],
    /// The newest head this process signed.
    last: Mutex<Option<SignedTreeHead>>,
}

impl LogSigner {
    /// Loads the log's key, making it first if the database has none
    /// (replicas starting together: one insert wins, all read the winner).
    pub async fn load(pool: &PgPool) -> Result<LogSigner, LogError> {
        let mut row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT private_pkcs8 FROM translog_key WHERE id = 1")
                .fetch_optional(pool)
                .await?;
        if row.is_none() {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| LogError::Key("cannot generate an Ed25519 key".into()))?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| LogError::Key("cannot read the new Ed25519 key".into()))?;
            let made = sqlx::query(
                "INSERT INTO translog_key (id, private_pkcs8, public_key) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(pkcs8.as_ref())
            .bind(pair.public_key().as_ref())
            .execute(pool)
            .await?;
            if made.rows_affected() == 1 {
                tracing::info!(
                    log_id = %sth::to_hex(&sth::log_id(&public_of(&pair)?)),
                    "new transparency log signing key"
                );
            }
            row = sqlx::query_as("SELECT private_pkcs8 FROM translog_key WHERE id = 1")
                .fetch_optional(pool)
                .await?;
        }
        let (pkcs8,) = row.ok_or_else(|| LogError::Key("no log key after making one".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| LogError::Key("the stored log key is not an Ed25519 PKCS#8 key".into()))?;
        Ok(LogSigner {
            public: public_of(&pair)?,
            pair,
            last: Mutex::new(None),
        })
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// A signed head of the tree as stored now: the last one signed when
    /// the tree has not grown since, else a new one.
    pub async fn latest(&self, conn: &mut PgConnection) -> Result<SignedTreeHead, LogError> {
        let head = store::head(conn).await?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = last.as_ref()
            && s.tree_size == head.tree_size
            && s.root_hash == head.root_hash
        {
            return Ok(s.clone());
        }
        // Timestamps only go forward, even if the clock steps back.
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let timestamp = last.as_ref().map_or(now, |s| now.max(s.timestamp + 1));
        let sth = self.sign(head.tree_size, timestamp, head.root_hash);
        *last = Some(sth.clone());
        metrics::counter!(crate::metric_names::HUB_TRANSLOG_HEADS_SIGNED_TOTAL).increment(1);
        Ok(sth)
    }

    /// The proof a certificate carries for its entry at `index`: the latest
    /// head and the audit path to it. Call it after the appending
    /// transaction committed (before, other connections cannot see the
    /// entry; the head row is the committed one).
    pub async fn bundle(
        &self,
        conn: &mut PgConnection,
        index: u64,
    ) -> Result<super::InclusionBundle, LogError> {
        let sth = self.latest(conn).await?;
        let audit_path = store::inclusion_proof(conn, index, sth.tree_size).await?;
        Ok(super::InclusionBundle {
            leaf_index: index,
            leaf_hash: store::leaf_hash_at(conn, index).await?,
            audit_path,
            signed_tree_head: sth,
        })
    }

    /// Signs a head (`latest` is what serves them).
    pub fn sign(&self, tree_size: u64, timestamp: u64, root_hash: super::Hash) -> SignedTreeHead {
        let msg = sth::signed_bytes(tree_size, timestamp, &root_hash);
        SignedTreeHead {
            tree_size,
            timestamp,
            root_hash,
            signature: self.pair.sign(&msg).as_ref().to_vec(),
        }
    }
}

fn public_of(pair: &Ed25519KeyPair) -> Result<[u8; 32], LogError> {
    pair.public_key()
        .as_ref()
        .try_into()
        .map_err(|_| LogError::Key("an Ed25519 public key is not 32 bytes".into()))
}
