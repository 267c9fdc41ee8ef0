//! Finding a key that appears twice in one JSON object. `serde_json` keeps the
//! last of repeated keys without a word; for a request that moves money, two
//! `amount`s are an ambiguity to refuse, not to resolve (another parser in front
//! of the engine may have read the first).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The top-level field of `json` in which some object repeats a key (the
/// repeated key itself when it is at the top level), or `None` when no object
/// does or `json` does not parse (its parser reports that).
///
/// Runs once per `POST /events`, before the body is read into values.
pub fn first_duplicate(json: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    match (Walk { top: true }).deserialize(&mut de) {
        Ok(()) => None,
        Err(e) => e.to_string().strip_prefix(MARK).map(|rest| {
            // serde_json appends " at line L column C".
            rest.rsplit_once(" at line ")
                .map_or(rest, |(field, _)| field)
                .to_owned()
        }),
    }
}

/// Prefix of the error message that names the field.
const MARK: &str = "duplicate key in field ";

/// Walks any JSON value, failing on the first object with a repeated key.
#[derive(Clone, Copy)]
struct Walk {
    /// Whether this is the body itself (its keys name the fields).
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
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
        while seq.next_element_seed(Walk { top: false })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("{MARK}{key}")));
            }
            let top = self.top;
            map.next_value_seed(Walk { top: false }).map_err(|e| {
                // A repeat deeper down is reported under this top-level field.
                if top && e.to_string().starts_with(MARK) {
                    de::Error::custom(format!("{MARK}{key}"))
                } else {
                    e
                }
            })?;
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
        assert_eq!(first_duplicate(r#"[{"a":1},{"a":2}]"#), None);
        assert_eq!(first_duplicate("{not json"), None);
    }
}
