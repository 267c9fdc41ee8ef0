//! Loading the operator's Kong-format YAML into the validated [`model::Config`].
//!
//! `yaml` parses with line numbers, `fields` gives typed, error-collecting access,
//! `decode` maps the file's schema onto the internal `model`, and `ids` derives
//! Kong-compatible entity ids.

pub mod decode;
pub mod fields;
pub mod ids;
pub mod model;
pub mod yaml;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use fields::FieldError;
pub use model::Config;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem is listed.
    #[error("{}", render(.path, .errors))]
    Invalid {
        /// The file.
        path: String,
        /// Every problem found, located.
        errors: Vec<FieldError>,
    },
}

fn render(path: &str, errors: &[FieldError]) -> String {
    let mut out = format!("{path}: {} error(s)", errors.len());
    let mut sorted: Vec<&FieldError> = errors.iter().collect();
    sorted.sort_by_key(|e| e.line);
    for e in sorted {
        out.push('\n');
        if e.path.is_empty() {
            out.push_str(&format!("{path}:{}: {}", e.line, e.message));
        } else {
            out.push_str(&format!("{path}:{}: {}: {}", e.line, e.path, e.message));
        }
    }
    out
}

/// Largest config file accepted (64 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and validates a config file.
///
/// Runs at start-up, on `gateway check`, and on every reload. Returns the model, or a
/// [`LoadError`] whose `Display` lists every error as `FILE:LINE: FIELD.PATH: message`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let shown = path.display().to_string();
    let read_err = |source| LoadError::Read {
        path: shown.clone(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is {size} bytes; the limit is {MAX_FILE_BYTES}"),
        )));
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse_str(&text).map_err(|errors| LoadError::Invalid {
        path: shown,
        errors,
    })
}

/// Validates config text; the same as [`load`] without the file.
pub fn parse_str(text: &str) -> Result<Config, Vec<FieldError>> {
    let root = yaml::parse(text).map_err(|e| {
        vec![FieldError {
            path: String::new(),
            line: e.line,
            message: format!("invalid YAML: {}", e.message),
        }]
    })?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    decode::decode(&root, hash)
}

#[cfg(test)]
mod tests;
