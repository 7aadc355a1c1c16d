//! `[lab]`: bounds of the lab work flow's uploads (`crate::lab`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Largest inspection photo, in bytes; larger uploads get 413.
    #[serde(default = "default_max_photo_bytes")]
    pub max_photo_bytes: usize,
    /// Most photos one inspection may have; beyond, 409.
    #[serde(default = "default_max_photos")]
    pub max_photos_per_inspection: u32,
}

/// What a phone camera's full-size JPEG takes, with room.
fn default_max_photo_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_photos() -> u32 {
    20
}

/// The most `max_photo_bytes` may be: a photo is held in memory while it is
/// checked and written.
pub const MAX_PHOTO_BYTES_LIMIT: usize = 64 * 1024 * 1024;

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            max_photo_bytes: default_max_photo_bytes(),
            max_photos_per_inspection: default_max_photos(),
        }
    }
}

impl LabConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_photo_bytes == 0 || self.max_photo_bytes > MAX_PHOTO_BYTES_LIMIT {
            return Err((
                "lab.max_photo_bytes".into(),
                format!("must be 1..={MAX_PHOTO_BYTES_LIMIT}"),
            ));
        }
        if self.max_photos_per_inspection == 0 || self.max_photos_per_inspection > 1000 {
            return Err((
                "lab.max_photos_per_inspection".into(),
                "must be 1..=1000".into(),
            ));
        }
        Ok(())
    }
}
