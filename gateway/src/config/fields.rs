//! Typed access to YAML maps that records located errors instead of stopping.
//!
//! The decoder walks the whole document and collects every problem it finds, each
//! with the field path (`services[0].routes[1].paths[0]`) and the line, so an operator
//! fixes a broken file in one pass.

use std::collections::HashMap;
use std::fmt;

use super::yaml::{Node, Value};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field at fault, e.g. `services[0].routes[1].paths[0]`.
    pub path: String,
    /// 1-based line in the file.
    pub line: usize,
    /// What is wrong, in Kong's words where Kong has words for it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: {}: {}", self.line, self.path, self.message)
        }
    }
}

/// Collects errors during one decode.
#[derive(Debug, Default)]
pub struct Errors {
    /// Everything found so far, in file order of discovery.
    pub list: Vec<FieldError>,
}

impl Errors {
    /// Records an error at `path` / `line`.
    pub fn push(&mut self, path: &str, line: usize, message: impl Into<String>) {
        self.list.push(FieldError {
            path: path.to_string(),
            line,
            message: message.into(),
        });
    }
}

/// Joins a parent path and a key: `services[0]` + `name` → `services[0].name`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a parent path and an index: `paths` + 1 → `paths[1]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A YAML map whose keys were checked against the allowed set.
pub struct Fields<'a> {
    /// Path of the map itself.
    pub path: String,
    /// Line of the map.
    pub line: usize,
    map: HashMap<&'a str, (&'a Node, usize)>,
}

/// Keys Kong allows on every entity.
const META_KEYS: &[&str] = &["_comment", "_ignore"];

impl<'a> Fields<'a> {
    /// Opens `node` as a map whose keys must be in `allowed`.
    ///
    /// Returns `None` (after recording an error) when the node is not a map. Unknown
    /// and repeated keys are recorded as errors; the known ones stay readable.
    pub fn open(node: &'a Node, path: &str, allowed: &[&str], errs: &mut Errors) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            errs.push(
                path,
                node.line,
                format!("expected a map, got {}", node.type_name()),
            );
            return None;
        };
        let mut map = HashMap::new();
        for (key, value) in entries {
            let key_path = join(path, &key.name);
            if !allowed.contains(&key.name.as_str()) && !META_KEYS.contains(&key.name.as_str()) {
                errs.push(&key_path, key.line, "unknown field");
                continue;
            }
            if map.insert(key.name.as_str(), (value, key.line)).is_some() {
                errs.push(&key_path, key.line, "duplicate key");
            }
        }
        Some(Fields {
            path: path.to_string(),
            line: node.line,
            map,
        })
    }

    /// Path of a field of this map.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Line of a field of this map (the map's own line when the field is absent).
    pub fn line_of(&self, key: &str) -> usize {
        self.map.get(key).map_or(self.line, |(_, line)| *line)
    }

    /// The field's node, unless absent or `null`.
    pub fn node(&self, key: &str) -> Option<&'a Node> {
        match self.map.get(key) {
            Some((node, _)) if node.value != Value::Null => Some(node),
            _ => None,
        }
    }

    /// Whether the field is present (even as `null`).
    pub fn has(&self, key: &str) -> bool {
        self.node(key).is_some()
    }

    /// A string field. Wrong types are recorded and read as absent.
    pub fn str(&self, key: &str, errs: &mut Errors) -> Option<String> {
        let node = self.node(key)?;
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                errs.push(
                    &self.path_of(key),
                    node.line,
                    format!("expected a string, got {}", node.type_name()),
                );
                None
            }
        }
    }

    /// A boolean field with a default.
    pub fn bool(&self, key: &str, default: bool, errs: &mut Errors) -> bool {
        let Some(node) = self.node(key) else {
            return default;
        };
        match node.value {
            Value::Bool(b) => b,
            _ => {
                errs.push(
                    &self.path_of(key),
                    node.line,
                    format!("expected a boolean, got {}", node.type_name()),
                );
                default
            }
        }
    }

    /// An integer field that must lie in `min..=max`, with a default.
    pub fn int(&self, key: &str, min: i64, max: i64, default: i64, errs: &mut Errors) -> i64 {
        let Some(node) = self.node(key) else {
            return default;
        };
        match node.value {
            Value::Int(i) if (min..=max).contains(&i) => i,
            Value::Int(_) => {
                errs.push(
                    &self.path_of(key),
                    node.line,
                    format!("value should be between {min} and {max}"),
                );
                default
            }
            _ => {
                errs.push(
                    &self.path_of(key),
                    node.line,
                    format!("expected an integer, got {}", node.type_name()),
                );
                default
            }
        }
    }

    /// An array field; each element is handed to `each` with its path.
    pub fn each(
        &self,
        key: &str,
        errs: &mut Errors,
        mut each: impl FnMut(&'a Node, String, &mut Errors),
    ) {
        let Some(node) = self.node(key) else {
            return;
        };
        let path = self.path_of(key);
        match &node.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    each(item, index(&path, i), errs);
                }
            }
            _ => errs.push(
                &path,
                node.line,
                format!("expected an array, got {}", node.type_name()),
            ),
        }
    }

    /// An array of strings, each with its path and line.
    pub fn str_list(&self, key: &str, errs: &mut Errors) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        self.each(key, errs, |item, path, errs| match &item.value {
            Value::Str(s) => out.push((s.clone(), path, item.line)),
            _ => errs.push(
                &path,
                item.line,
                format!("expected a string, got {}", item.type_name()),
            ),
        });
        out
    }
}
