//! Finding a key that appears twice in one JSON object. `serde_json` keeps the
//! last of repeated keys without a word; for a request that moves money, two
//! `amount`s are an ambiguity to refuse, not to resolve (another parser in front
//! of the engine may have read the first).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The top-level field of `json` in which some object repeats a key (the
/// repeated key itself when it is at the top level), or `None` when no object
/// does or `json` does not parse (its parser reports that).
///
/// Runs once per `POST /events`, before the body is read into values.
pub fn first_duplicate(json: &str) -> Option<String> {
    let found = Found::default();
    let mut de = serde_json::Deserializer::from_str(json);
    let walk = Walk {
        top: true,
        found: &found,
    };
    match walk.deserialize(&mut de) {
        Ok(()) => None,
        Err(_) => found.field.into_inner(),
    }
}

/// What the walk found, kept beside the parser's error (whose text cannot be
/// trusted to carry a key verbatim).
#[derive(Default)]
struct Found {
    /// Some object repeated a key.
    duplicate: Cell<bool>,
    /// The top-level field it was in.
    field: RefCell<Option<String>>,
}

/// Walks any JSON value, failing on the first object with a repeated key.
#[derive(Clone, Copy)]
struct Walk<'a> {
    /// Whether this is the body itself (its keys name the fields).
    top: bool,
    found: &'a Found,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = Walk { top: false, ..self };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let repeated = !seen.insert(key.clone());
            let result = if repeated {
                self.found.duplicate.set(true);
                Err(de::Error::custom("duplicate key"))
            } else {
                map.next_value_seed(Walk { top: false, ..self })
            };
            if result.is_err() && self.top && self.found.duplicate.get() {
                // The repeat (here or deeper down) is reported under this field.
                *self.found.field.borrow_mut() = Some(key);
            }
            result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::first_duplicate;

    #[test]
    fn repeated_keys_are_found_at_any_depth_and_named_by_their_field() {
        assert_eq!(first_duplicate(r#"{"a":1,"b":2}"#), None);
        assert_eq!(
            first_duplicate(r#"{"amount":1,"amount":2}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(
            first_duplicate(r#"{"a":1,"metadata":{"x":[{"k":1,"k":2}]}}"#).as_deref(),
            Some("metadata")
        );
        assert_eq!(
            first_duplicate(r#"{"x at line 1 column 2":1,"x at line 1 column 2":1}"#).as_deref(),
            Some("x at line 1 column 2")
        );
        assert_eq!(
            first_duplicate(r#"{"amo\u0075nt":1,"amount":2}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(first_duplicate(r#"[{"a":1},{"a":2}]"#), None);
        assert_eq!(first_duplicate("{not json"), None);
    }
}
