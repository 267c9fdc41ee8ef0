//! Path normalisation, applied to every request path before routing and to
//! configured prefix paths when they are validated (Kong §2.1).
//!
//! Percent-triplets are upper-cased, triplets of unreserved characters are decoded,
//! reserved characters stay encoded, dot-segments are removed and runs of slashes are
//! merged. So `/a/%2e%2e/b`, `/a/../b` and `//b` all reach the router as `/b`, and a
//! protected route cannot be reached through a crafted spelling of its path.

/// Why a path could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// The path does not start with `/`.
    NotAbsolute,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a request path (no query string).
///
/// Runs once per request, before routing. Returns the normalised path, or an error
/// for a path that no client should send (the proxy answers those with 400).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(raw)?;
    Ok(remove_dot_segments(&decoded))
}

/// Upper-cases percent-triplets and decodes those of unreserved characters.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let value = h * 16 + l;
            if is_unreserved(value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Non-ASCII bytes arrive here only as part of valid UTF-8 (the input is a
            // &str), so copying the whole char keeps the string valid.
            let ch_len = utf8_len(b);
            out.push_str(&raw[i..i + ch_len]);
            i += ch_len;
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4) and merges repeated slashes.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") || path == "/";
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Percent-encodes every byte outside the set that may appear in a path as is.
///
/// Runs on the upstream path after it is built, so whatever the router produced is a
/// valid request-target. Existing `%XX` triplets are kept.
pub fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let safe = is_unreserved(b)
            || matches!(
                b,
                b'/' | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if safe {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap()
    }

    #[test]
    fn decodes_unreserved_and_uppercases_reserved() {
        assert_eq!(n("/h%65llo"), "/hello");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%3a"), "/a%3A");
        assert_eq!(n("/cat%20and%20dog"), "/cat%20and%20dog");
    }

    #[test]
    fn removes_dot_segments_and_merges_slashes() {
        assert_eq!(n("/foo/a/../bar"), "/foo/bar");
        assert_eq!(n("/foo/./bar"), "/foo/bar");
        assert_eq!(n("/foo//bar"), "/foo/bar");
        assert_eq!(n("/a/%2e%2e/b"), "/b");
        assert_eq!(n("/a/%2E%2E/%2e/b/"), "/b/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/route./req"), "/route./req");
    }

    #[test]
    fn refuses_broken_encoding() {
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn escape_keeps_valid_paths_and_encodes_the_rest() {
        assert_eq!(escape_path("/a/b%20c"), "/a/b%20c");
        assert_eq!(escape_path("/a b"), "/a%20b");
        assert_eq!(escape_path("/é"), "/%C3%A9");
    }
}
