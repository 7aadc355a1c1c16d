//! Firmware profiles: declarative descriptions of an instrument model.
//!
//! A profile is a TOML file in `firmware-profiles/` (format documented in
//! `firmware-profiles/README.md`). It says how to talk to the model (transport
//! defaults) and which points it exposes (register, data type, word order,
//! scale, unit). The edge agent decodes with it; the simulator encodes with it,
//! so both sides of a test agree by construction only on the *format*, while the
//! wire in between is real Modbus.

mod codec;
mod model;
mod sweep;

pub use codec::{
    DecodeError, Decoded, EncodeError, decode, decode_bit, decode_point, decode_text, encode,
    encode_checked, encode_text,
};
pub use model::{
    DataType, Deadband, Endianness, FORMAT_VERSION, MAX_BITS_PER_READ, MAX_IN_FLIGHT,
    MAX_REGISTERS_PER_READ, ModbusDefaults, ModbusLocation, ModelInfo, Parity, Point, PollGroup,
    Priority, Profile, Protocol, RegisterKind, ScpiDefaults, SerialDefaults, SimSpec,
};
pub use sweep::IvSweep;

use std::path::{Path, PathBuf};

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type error; the message carries the line and column.
    #[error("profile {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Parsed, but not a usable description of a device.
    #[error("profile {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Profile {
    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(&text, path)
    }

    /// Parses and validates profile text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        profile
            .validate()
            .map_err(|(field, message)| ProfileError::Invalid {
                path: path.to_path_buf(),
                field,
                message,
            })?;
        Ok(profile)
    }

    /// Finds `<dir>/<id>.toml` and checks that its `model.id` matches `id`.
    pub fn load_by_id(dir: &Path, id: &str) -> Result<Profile, ProfileError> {
        let path = dir.join(format!("{id}.toml"));
        let profile = Profile::load(&path)?;
        if profile.model.id != id {
            return Err(ProfileError::Invalid {
                path,
                field: "model.id".into(),
                message: format!(
                    "is {:?} but the file name says {id:?}; they must match",
                    profile.model.id
                ),
            });
        }
        Ok(profile)
    }
}
