//! Loading TOML config files with errors a technician can act on.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The message names the line, column and key (toml's own report).
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {}: key `{key}`: {message}", at(path, *line))]
    Invalid {
        path: PathBuf,
        key: String,
        /// 1-based line of the key, when it can be found in the text.
        line: Option<usize>,
        message: String,
    },
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}, line {l}", path.display()),
        None => path.display().to_string(),
    }
}

/// Reads, deserializes and validates a TOML file. Unknown keys are errors when
/// the target type says `deny_unknown_fields`, which every config struct here
/// does: a typo must not silently fall back to a default. `validate` returns the key
/// path of the offending value (`devices[1].poll_interval_ms`) and why; the
/// error then carries the line of that key too.
pub fn load_toml_validated<T: DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&T) -> Result<(), (String, String)>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: T = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    validate(&value).map_err(|(key, message)| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: locate_key(&text, &key),
        key,
        message,
    })?;
    Ok(value)
}

/// Finds the 1-based line of a key path such as `devices[1].transport.tcp` or
/// `uplink.batch_max` in conventionally laid-out TOML (tables and arrays of tables
/// as headers, leaves as `key = value`).
pub fn locate_key(text: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut start, mut end) = (0usize, lines.len());
    let mut table = String::new();
    let segments: Vec<&str> = key.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*seg, None),
        };
        let path = if table.is_empty() {
            name.to_string()
        } else {
            format!("{table}.{name}")
        };
        let is_header = |l: &str, h: &str| l.trim() == h;
        let section_end = |from: usize, path: &str| {
            (from..end)
                .find(|&j| {
                    let t = lines[j].trim();
                    t.starts_with('[')
                        && !t.starts_with(&format!("[{path}."))
                        && !t.starts_with(&format!("[[{path}."))
                })
                .unwrap_or(end)
        };
        if let Some(n) = index {
            let header = format!("[[{path}]]");
            let h = (start..end)
                .filter(|&j| is_header(lines[j], &header))
                .nth(n)?;
            start = h + 1;
            end = section_end(start, &path);
            table = path;
            if i == segments.len() - 1 {
                return Some(h + 1);
            }
            continue;
        }
        let leaf = (start..end).find(|&j| {
            let t = lines[j].trim_start();
            t.strip_prefix(name)
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        if let Some(j) = leaf {
            return Some(j + 1);
        }
        let header = format!("[{path}]");
        let Some(h) = (start..end).find(|&j| is_header(lines[j], &header)) else {
            // A table only ever written as part of a deeper header
            // (`[auth.oidc]` without `[auth]`): look on inside that one.
            let deeper = format!("[{path}.");
            (start..end).find(|&j| lines[j].trim().starts_with(&deeper))?;
            table = path;
            continue;
        };
        start = h + 1;
        end = section_end(start, &path);
        table = path;
        if i == segments.len() - 1 {
            return Some(h + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::locate_key;

    const TEXT: &str = "gateway_id = \"gw\"\n\n[uplink]\nhub_url = \"x\"\nbatch_max = 0\n\n[[devices]]\nid = \"a\"\n\n[[devices]]\nid = \"b\"\ntransport = { tcp = \"nope\" }\npoll_interval_ms = 0\n";

    #[test]
    fn finds_keys_of_a_table_named_only_by_a_deeper_header() {
        let text = "[database]\nurl = \"x\"\n\n[auth.oidc]\nissuer = \"y\"\n";
        assert_eq!(locate_key(text, "auth.oidc.issuer"), Some(5));
        assert_eq!(locate_key(text, "auth.oidc"), Some(4));
        assert_eq!(locate_key(text, "auth.nothing"), None);
    }

    #[test]
    fn finds_top_level_table_and_array_keys() {
        assert_eq!(locate_key(TEXT, "gateway_id"), Some(1));
        assert_eq!(locate_key(TEXT, "uplink.batch_max"), Some(5));
        assert_eq!(locate_key(TEXT, "devices[1].poll_interval_ms"), Some(13));
        assert_eq!(locate_key(TEXT, "devices[1].transport.tcp"), Some(12));
        assert_eq!(locate_key(TEXT, "devices[0].id"), Some(8));
        assert_eq!(locate_key(TEXT, "devices[5].id"), None);
    }
}
