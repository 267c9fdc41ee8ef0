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
    /// `application/json` (any content type containing it, as in Kong).
    Json,
    /// `multipart/form-data` with its boundary.
    Multipart(String),
}

impl BodyKind {
    /// Classifies a `Content-Type` value; `None` for bodies without arguments.
    pub fn of(content_type: Option<&str>) -> Option<BodyKind> {
        let ct = content_type?.to_ascii_lowercase();
        if ct.contains("application/x-www-form-urlencoded") {
            Some(BodyKind::Form)
        } else if ct.contains("application/json") {
            Some(BodyKind::Json)
        } else if ct.contains("multipart/form-data") {
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
                .filter(|p| p.name.as_deref() == Some(name) && !p.is_file)
                .map(|p| String::from_utf8_lossy(p.value).into_owned())
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

fn from_values(mut values: Vec<String>) -> Lookup {
    match values.len() {
        0 => Lookup::Missing,
        1 => Lookup::One(values.remove(0)),
        _ => Lookup::Duplicate,
    }
}

fn form_values(body: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query_component(k) == name).then(|| decode_query_component(v))
        })
        .collect()
}

/// Returns `body` without argument `name`, or `None` when there was nothing to remove.
pub fn remove(kind: &BodyKind, body: &[u8], name: &str) -> Option<Bytes> {
    match kind {
        BodyKind::Form => {
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
            removed.then(|| Bytes::from(kept.join(&b'&')))
        }
        BodyKind::Json => {
            let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
            value.as_object_mut()?.remove(name)?;
            serde_json::to_vec(&value).ok().map(Bytes::from)
        }
        BodyKind::Multipart(b) => {
            let parts = multipart_parts(body, b);
            let drop: Vec<_> = parts
                .iter()
                .filter(|p| p.name.as_deref() == Some(name) && !p.is_file)
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

/// One part of a multipart body.
struct Part<'a> {
    /// `name` from its Content-Disposition.
    name: Option<String>,
    /// Whether it has a `filename` (an upload, not a field).
    is_file: bool,
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
        // A delimiter starts the body or follows a CRLF.
        if at == 0 || body[..at].ends_with(b"\r\n") {
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
        let (name, is_file) = disposition(head);
        parts.push(Part {
            name,
            is_file,
            value: &body[value_start..value_end],
            span: start..next,
        });
    }
    parts
}

/// `name` and whether `filename` is present, from a part's headers.
fn disposition(head: &[u8]) -> (Option<String>, bool) {
    let head = String::from_utf8_lossy(head);
    for line in head.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut name = None;
        let mut is_file = false;
        for param in v.split(';').skip(1) {
            let Some((pk, pv)) = param.split_once('=') else {
                continue;
            };
            let pv = pv.trim().trim_matches('"').to_string();
            match pk.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(pv),
                "filename" | "filename*" => is_file = true,
                _ => {}
            }
        }
        return (name, is_file);
    }
    (None, false)
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
    }

    #[test]
    fn multipart_lookup_and_removal() {
        let kind = BodyKind::of(Some(MP)).unwrap();
        let body = mp_body();
        assert_eq!(lookup(&kind, &body, "apikey"), Lookup::One("secret".into()));
        assert_eq!(lookup(&kind, &body, "f"), Lookup::Missing);
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
