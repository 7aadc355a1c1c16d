//! The `hub_verdicts` tree: what the hub said of this gateway's runs (its
//! verdict, the certificate covering each), one entry per run id, kept
//! across restarts and hub outages. The bytes are `crate::verdicts`'s,
//! which also bounds how many are kept.

use super::{Buffer, BufferError};

const TREE: &str = "hub_verdicts";

impl Buffer {
    /// Writes `put` (key, bytes) and deletes `remove` in one atomic batch,
    /// then fsyncs.
    pub async fn update_hub_verdicts(
        &self,
        put: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> Result<(), BufferError> {
        {
            // The records' lock also keeps `recycle` from swapping the
            // database under this write.
            let _guard = self.lock();
            let tree = self.db()?.open_tree(TREE)?;
            let mut batch = sled::Batch::default();
            for k in remove {
                batch.remove(k.as_bytes());
            }
            for (k, v) in put {
                batch.insert(k.as_bytes(), v.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        let _flushing = self.flush_lock.lock().await;
        self.db()?.flush_async().await?;
        Ok(())
    }

    /// Every entry of the tree: (key, bytes).
    pub fn hub_verdicts(&self) -> Result<Vec<(String, Vec<u8>)>, BufferError> {
        let tree = self.db()?.open_tree(TREE)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
