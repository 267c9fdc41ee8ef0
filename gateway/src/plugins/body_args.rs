//! Named arguments in a request body, as Kong's `kong.request.get_body` sees them:
//! `application/x-www-form-urlencoded`, `application/json` (top-level object) and
//! `multipart/form-data` (non-file parts). Used by key-auth's `key_in_body`.
//!
//! Lookups never fail: a body that does not parse has no arguments. Removal keeps
//! the rest of a form or multipart body byte for byte; a JSON body is re-serialised
//! without the argument, as Kong re-serialises it.

use bytes::Bytes;

use super::auth::decode_query_component;

/// The body encodings the gateway reads arguments from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json` (and types starting with it, as in Kong).
    Json,
    /// `multipart/form-data` with its boundary.
    Multipart(String),
}

impl BodyKind {
    /// Classifies a `Content-Type` value; `None` for bodies without arguments.
    pub fn of(content_type: Option<&str>) -> Option<BodyKind> {
        // Kong's `kong.request.get_body`: the type must start the header value.
        let ct = content_type?.trim_start().to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            Some(BodyKind::Form)
        } else if ct.starts_with("application/json") {
            Some(BodyKind::Json)
        } else if ct.starts_with("multipart/form-data") {
            boundary(content_type?).map(BodyKind::Multipart)
        } else {
            None
        }
    }
}

/// The `boundary` parameter of a multipart content type, unquoted.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// What a body holds under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not there, or not a string.
    Missing,
    /// Exactly one string value.
    One(String),
    /// Repeated, or an array or object (Kong's duplicate case).
    Duplicate,
}

/// Looks `name` up in `body`; runs once per key name a plugin asks for.
pub fn lookup(kind: &BodyKind, body: &[u8], name: &str) -> Lookup {
    match kind {
        BodyKind::Form => from_values(form_values(body, name)),
        BodyKind::Multipart(b) => from_values(
            multipart_parts(body, b)
                .into_iter()
                .filter(|p| p.name.as_deref() == Some(name))
                .map(|p| Some(String::from_utf8_lossy(p.value).into_owned()))
                .collect(),
        ),
        BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => match map.get(name) {
                Some(serde_json::Value::String(s)) => Lookup::One(s.clone()),
                Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
                    Lookup::Duplicate
                }
                _ => Lookup::Missing,
            },
            _ => Lookup::Missing,
        },
    }
}

/// One value is the key; a name without a value (`apikey&…`) is Kong's `true`, not
/// a string, and repeated names are a duplicate.
fn from_values(mut values: Vec<Option<String>>) -> Lookup {
    match values.len() {
        0 => Lookup::Missing,
        1 => values.remove(0).map_or(Lookup::Missing, Lookup::One),
        _ => Lookup::Duplicate,
    }
}

/// Removes every `name` argument from form-encoded bytes (a body or a query
/// string), keeping the others byte for byte; `None` when there was none.
pub fn strip_form_arg(body: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut removed = false;
    let kept: Vec<&[u8]> = body
        .split(|b| *b == b'&')
        .filter(|pair| {
            let k = pair.split(|b| *b == b'=').next().unwrap_or(pair);
            let hit = decode_query_component(&String::from_utf8_lossy(k)) == name;
            removed |= hit;
            !hit
        })
        .collect();
    removed.then(|| kept.join(&b'&'))
}

/// Values of argument `name` in form-encoded bytes (a body or a query string):
/// `Some` percent-decoded value, `None` for a bare name without `=`.
pub fn form_values(body: &[u8], name: &str) -> Vec<Option<String>> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| match pair.split_once('=') {
            Some((k, v)) => {
                (decode_query_component(k) == name).then(|| Some(decode_query_component(v)))
            }
            None => (decode_query_component(pair) == name).then_some(None),
        })
        .collect()
}

/// Returns `body` without argument `name`, or `None` when there was nothing to remove.
pub fn remove(kind: &BodyKind, body: &[u8], name: &str) -> Option<Bytes> {
    match kind {
        BodyKind::Form => strip_form_arg(body, name).map(Bytes::from),
        BodyKind::Json => remove_json_member(body, name),
        BodyKind::Multipart(b) => {
            let parts = multipart_parts(body, b);
            let drop: Vec<_> = parts
                .iter()
                .filter(|p| p.name.as_deref() == Some(name))
                .map(|p| p.span.clone())
                .collect();
            if drop.is_empty() {
                return None;
            }
            let mut out = Vec::with_capacity(body.len());
            let mut at = 0;
            for span in drop {
                out.extend_from_slice(&body[at..span.start]);
                at = span.end;
            }
            out.extend_from_slice(&body[at..]);
            Some(Bytes::from(out))
        }
    }
}

/// Removes every top-level member `name` from a JSON object, keeping every other
/// byte (number spellings, order, spacing) as the client sent it. `None` when the
/// body is not a JSON object or has no such member.
fn remove_json_member(body: &[u8], name: &str) -> Option<Bytes> {
    // Only well-formed objects are edited.
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    parsed.as_object()?.get(name)?;
    let members = json_members(body)?;
    let drop: Vec<&JsonMember> = members.iter().filter(|m| m.key == name).collect();
    if drop.is_empty() {
        return None;
    }
    let keep: Vec<&JsonMember> = members.iter().filter(|m| m.key != name).collect();
    let open = members.first().map_or(0, |m| m.span.start);
    let close = members.last().map_or(body.len(), |m| m.span.end);
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..open]);
    for (i, m) in keep.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&body[m.span.clone()]);
    }
    out.extend_from_slice(&body[close..]);
    Some(Bytes::from(out))
}

/// A top-level member of a JSON object: its decoded key and its bytes (from the
/// key's first byte, leading whitespace included, to the end of the value).
struct JsonMember {
    key: String,
    span: std::ops::Range<usize>,
}

/// Splits a JSON object (already known to parse) into its top-level members.
fn json_members(body: &[u8]) -> Option<Vec<JsonMember>> {
    let open = body.iter().position(|b| *b == b'{')?;
    let mut members = Vec::new();
    let mut i = open + 1;
    let mut start = i;
    let mut depth = 0usize;
    let mut key: Option<String> = None;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let end = string_end(body, i)?;
                if depth == 0 && key.is_none() {
                    key = serde_json::from_slice::<String>(&body[i..=end]).ok();
                }
                i = end;
            }
            b'{' | b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b'}' if depth > 0 => depth -= 1,
            b',' | b'}' if depth == 0 => {
                // Trailing whitespace before the separator stays with the member.
                if let Some(k) = key.take() {
                    members.push(JsonMember {
                        key: k,
                        span: start..i,
                    });
                }
                if body[i] == b'}' {
                    return Some(members);
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the quote closing the JSON string that opens at `open`.
fn string_end(body: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// One part of a multipart body.
struct Part<'a> {
    /// `name` from its Content-Disposition.
    name: Option<String>,
    /// Its content, without the CRLF before the next delimiter.
    value: &'a [u8],
    /// The bytes to cut to remove it: from its delimiter line to the next one.
    span: std::ops::Range<usize>,
}

/// Splits a multipart body on `--boundary` lines (RFC 7578). A body that does not
/// parse yields the parts found before the fault.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(off) = find(&body[i..], delim) {
        let at = i + off;
        // A delimiter starts the body or follows a CRLF, and ends its line (after
        // optional transport padding) or closes the body with `--`.
        let rest = &body[at + delim.len()..];
        let line_ends = rest.starts_with(b"--")
            || rest
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .is_some_and(|p| rest[p..].starts_with(b"\r\n"));
        if (at == 0 || body[..at].ends_with(b"\r\n")) && line_ends {
            starts.push(at);
        }
        i = at + delim.len();
    }
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let (start, next) = (pair[0], pair[1]);
        let after = start + delim.len();
        if body[after..].starts_with(b"--") {
            break; // closing delimiter
        }
        let Some(head_len) = find(&body[after..next], b"\r\n\r\n") else {
            break;
        };
        let head = &body[after..after + head_len];
        let value_start = after + head_len + 4;
        let value_end = next.saturating_sub(2).max(value_start);
        let name = disposition_name(head);
        parts.push(Part {
            name,
            value: &body[value_start..value_end],
            span: start..next,
        });
    }
    parts
}

/// The `name` parameter of a part's Content-Disposition (quotes respected, so a
/// `;` inside a quoted value does not start a parameter).
fn disposition_name(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    let line = head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            ';' if !quoted => params.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    params.push(current);
    params.iter().skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().to_string())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MP: &str = "multipart/form-data; boundary=XyZ";

    fn mp_body() -> Vec<u8> {
        b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"apikey\"\r\n\r\nsecret\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n\
Content-Type: text/plain\r\n\r\nfile\r\nbody\r\n--XyZ--\r\n"
            .to_vec()
    }

    #[test]
    fn kinds_follow_kong_content_type_rules() {
        assert_eq!(
            BodyKind::of(Some("application/x-www-form-urlencoded; charset=UTF-8")),
            Some(BodyKind::Form)
        );
        assert_eq!(BodyKind::of(Some("Application/JSON")), Some(BodyKind::Json));
        assert_eq!(
            BodyKind::of(Some(MP)),
            Some(BodyKind::Multipart("XyZ".into()))
        );
        assert_eq!(BodyKind::of(Some("multipart/form-data")), None);
        assert_eq!(BodyKind::of(Some("text/x; application/json")), None);
        assert_eq!(BodyKind::of(Some("text/plain")), None);
        assert_eq!(BodyKind::of(None), None);
    }

    #[test]
    fn form_lookup_and_removal() {
        let body = b"x=%20y&apikey=k%2B1&z=2";
        assert_eq!(
            lookup(&BodyKind::Form, body, "apikey"),
            Lookup::One("k+1".into())
        );
        assert_eq!(
            lookup(&BodyKind::Form, b"apikey=a&apikey=b", "apikey"),
            Lookup::Duplicate
        );
        assert_eq!(
            lookup(&BodyKind::Form, b"other=1", "apikey"),
            Lookup::Missing
        );
        assert_eq!(
            remove(&BodyKind::Form, body, "apikey").as_deref(),
            Some(&b"x=%20y&z=2"[..])
        );
        assert_eq!(remove(&BodyKind::Form, b"a=1", "apikey"), None);
    }

    #[test]
    fn json_lookup_and_removal() {
        let body = br#"{"apikey":"k","n":1}"#;
        assert_eq!(
            lookup(&BodyKind::Json, body, "apikey"),
            Lookup::One("k".into())
        );
        assert_eq!(
            lookup(&BodyKind::Json, br#"{"apikey":["a","b"]}"#, "apikey"),
            Lookup::Duplicate
        );
        assert_eq!(
            lookup(&BodyKind::Json, br#"{"apikey":5}"#, "apikey"),
            Lookup::Missing
        );
        assert_eq!(lookup(&BodyKind::Json, b"[1,2]", "apikey"), Lookup::Missing);
        assert_eq!(lookup(&BodyKind::Json, b"{bad", "apikey"), Lookup::Missing);
        assert_eq!(
            remove(&BodyKind::Json, body, "apikey").as_deref(),
            Some(&br#"{"n":1}"#[..])
        );
        // Everything else is kept byte for byte: order, spacing, number spellings.
        let body =
            br#" { "z": 12345678901234567890123, "apikey" : "k" , "a": {"apikey":[1,"}"]} } "#;
        assert_eq!(
            remove(&BodyKind::Json, body, "apikey").as_deref(),
            Some(&br#" { "z": 12345678901234567890123, "a": {"apikey":[1,"}"]} } "#[..])
        );
        assert_eq!(
            remove(&BodyKind::Json, br#"{"apikey":"k"}"#, "apikey").as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(
            remove(
                &BodyKind::Json,
                br#"{"a\"pikey":1,"apikey":"\"}"}"#,
                "apikey"
            )
            .as_deref(),
            Some(&br#"{"a\"pikey":1}"#[..])
        );
    }

    #[test]
    fn multipart_lookup_and_removal() {
        let kind = BodyKind::of(Some(MP)).unwrap();
        let body = mp_body();
        assert_eq!(lookup(&kind, &body, "apikey"), Lookup::One("secret".into()));
        // File parts are arguments too, as Kong's multipart parser returns them.
        assert_eq!(
            lookup(&kind, &body, "f"),
            Lookup::One("file\r\nbody".into())
        );
        // A quoted `;` does not start a parameter; a longer line is not a boundary.
        let tricky = b"--XyZ\r\nContent-Disposition: form-data; name=\"x;name=apikey\"\r\n\r\n--XyZabc\r\n--XyZ--\r\n";
        assert_eq!(lookup(&kind, tricky, "apikey"), Lookup::Missing);
        assert_eq!(
            lookup(&kind, tricky, "x;name=apikey"),
            Lookup::One("--XyZabc".into())
        );
        let rest = remove(&kind, &body, "apikey").unwrap();
        let rest = String::from_utf8(rest.to_vec()).unwrap();
        assert!(!rest.contains("secret"));
        assert!(rest.starts_with(
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\n"
        ));
        assert!(rest.ends_with("file\r\nbody\r\n--XyZ--\r\n"));
        assert_eq!(lookup(&kind, rest.as_bytes(), "a"), Lookup::One("1".into()));
        let part = b"--XyZ\r\nContent-Disposition: form-data; name=apikey\r\n\r\nk\r\n";
        let twice = [&part[..], part, b"--XyZ--"].concat();
        assert_eq!(lookup(&kind, &twice, "apikey"), Lookup::Duplicate);
    }

    #[test]
    fn garbage_has_no_arguments() {
        let kind = BodyKind::Multipart("b".into());
        for body in [&b""[..], b"--b", b"--b\r\nno-head", b"\xff\xfe--b--"] {
            assert_eq!(lookup(&kind, body, "apikey"), Lookup::Missing);
            assert_eq!(remove(&kind, body, "apikey"), None);
        }
    }
}
