//! The `calibration` tree: what the hub last said of each instrument's
//! calibration, replaced whole on each word from the hub and kept across
//! restarts and hub outages. The bytes are `crate::calibration`'s.

use super::{Buffer, BufferError};

const TREE: &str = "calibration";

impl Buffer {
    /// Replaces the tree's entries (key, bytes) atomically and fsyncs.
    pub async fn replace_calibrations(
        &self,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), BufferError> {
        {
            // The records' lock also keeps `recycle` from swapping the
            // database under this write.
            let _guard = self.lock();
            let tree = self.db()?.open_tree(TREE)?;
            let mut batch = sled::Batch::default();
            for k in tree.iter().keys() {
                batch.remove(k?);
            }
            for (k, v) in entries {
                batch.insert(k.as_bytes(), v.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        let _flushing = self.flush_lock.lock().await;
        self.db()?.flush_async().await?;
        Ok(())
    }

    /// Every entry of the tree: (key, bytes).
    pub fn calibrations(&self) -> Result<Vec<(String, Vec<u8>)>, BufferError> {
        let tree = self.db()?.open_tree(TREE)?;
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
