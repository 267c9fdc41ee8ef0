//! Caching decisions (Kong §6.2): whether a request may be answered from the cache,
//! whether a response may be stored and for how long, whether a stored entry is fresh
//! for a request, and which stored headers a hit replays. Pure functions of the
//! config, the headers and the clock, so the plugin and its tests share one rule set.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES, PRAGMA, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, Method};

use super::config::{Config, ParamMatch};

/// What the request asks of the cache (from its method and, with cache_control, its
/// Cache-Control).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age`: the oldest entry the client accepts, in seconds.
    pub max_age: Option<u64>,
    /// `max-stale`: how far past its freshness an entry may be; `Some(None)` when
    /// the directive has no value (any staleness).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh`: how long the entry must stay fresh, in seconds.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: answer from the cache or with 504, never from the upstream.
    pub only_if_cached: bool,
}

/// What the access phase does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// Not cacheable: proxy it and mark it `X-Cache-Status: Bypass`.
    Bypass,
    /// Look the key up, honouring these directives.
    Lookup(RequestDirectives),
}

/// Decides whether a request may use the cache.
///
/// Runs in the access phase, before the key is computed. Returns
/// [`RequestDecision::Bypass`] when the method is not in `request_method`, or, with
/// `cache_control` on, when the request's Cache-Control has `no-store` or `no-cache`
/// (Kong), or it has no Cache-Control and `Pragma: no-cache`. Otherwise returns
/// [`RequestDecision::Lookup`] with the request's `max-age`, `max-stale` and
/// `min-fresh` when `cache_control` is on (default directives when off).
///
/// `only-if-cached` is reported whatever `cache_control` says: Kong honours it only
/// with `cache_control` on, this gateway always does (a client that asks never to
/// reach the upstream gets a 504 on a miss rather than an upstream call).
pub fn request(config: &Config, method: &Method, headers: &HeaderMap) -> RequestDecision {
    if !config.request_method.contains(method) {
        return RequestDecision::Bypass;
    }
    let cc = Directives::of(headers, &CACHE_CONTROL);
    let mut directives = RequestDirectives {
        only_if_cached: cc.has("only-if-cached"),
        ..RequestDirectives::default()
    };
    if config.cache_control {
        if cc.has("no-store") || cc.has("no-cache") {
            return RequestDecision::Bypass;
        }
        if !headers.contains_key(CACHE_CONTROL) && Directives::of(headers, &PRAGMA).has("no-cache")
        {
            return RequestDecision::Bypass;
        }
        directives.max_age = cc.seconds("max-age");
        directives.max_stale = match cc.get("max-stale") {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => delta_seconds(v).map(Some),
        };
        directives.min_fresh = cc.seconds("min-fresh");
    }
    RequestDecision::Lookup(directives)
}

/// Whether a response may be stored, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storable {
    /// Freshness, in seconds.
    pub ttl: u64,
    /// How long to keep the entry, in seconds; at least `ttl`.
    pub storage_ttl: u64,
}

/// Decides whether an upstream response may be stored.
///
/// Runs on the response header of a Miss or Refresh. Returns `None` (the status
/// becomes `Bypass`, nothing is stored) unless:
/// * the response is safe to share, whatever the config: no `Set-Cookie`, no
///   Cache-Control `private` or `no-store`, no `Vary: *`, status below 500 and not
///   206 (beyond Kong);
/// * the status is in `response_code`;
/// * there is exactly one non-empty `Content-Type` and it matches a `content_type`
///   entry: type and subtype equal ignoring case or `*`, and parameters identical in
///   number and value (names ignoring case); with `content_type_parameters: ignore`
///   an entry without parameters matches any;
/// * with `cache_control` on: no `no-cache`, and a freshness above 0 from `s-maxage`,
///   else `max-age`, else `Expires` − `now` (Kong: a response with none of them is
///   not stored).
///
/// The freshness is `cache_ttl` when `cache_control` is off. The storage TTL is
/// `storage_ttl` (never below the freshness) plus `stale_if_error`.
pub fn response(
    config: &Config,
    status: u16,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Storable> {
    if status >= 500 || status == 206 || headers.contains_key(SET_COOKIE) {
        return None;
    }
    let cc = Directives::of(headers, &CACHE_CONTROL);
    if cc.has("private") || cc.has("no-store") || !vary_covered(headers, config) {
        return None;
    }
    if !config.response_code.contains(&status) {
        return None;
    }
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let content_type = types.next()?.to_str().ok()?.trim();
    if types.next().is_some() || content_type.is_empty() {
        return None;
    }
    let actual = MediaType::parse(content_type)?;
    let matched = config.content_type.iter().any(|entry| {
        MediaType::parse(entry).is_some_and(|e| e.accepts(&actual, config.content_type_parameters))
    });
    if !matched {
        return None;
    }
    let ttl = if config.cache_control {
        if cc.has("no-cache") {
            return None;
        }
        let ttl = match cc.seconds("s-maxage").or_else(|| cc.seconds("max-age")) {
            Some(t) => t,
            None => expires_in(headers, now)?,
        };
        if ttl == 0 {
            return None;
        }
        ttl
    } else {
        config.cache_ttl
    };
    let ttl = ttl.min(super::store::MAX_TTL);
    let storage_ttl = config
        .storage_ttl
        .unwrap_or(ttl)
        .max(ttl)
        .saturating_add(config.stale_if_error)
        .min(super::store::MAX_TTL);
    Some(Storable { ttl, storage_ttl })
}

/// How the stored entry relates to this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it: `X-Cache-Status: Hit`.
    Fresh,
    /// Fetch again and store: `X-Cache-Status: Refresh`.
    Stale,
}

/// Decides whether an entry `age` seconds old with freshness `ttl` may answer a
/// request.
///
/// Runs on a lookup that found an entry. Without `cache_control`, returns
/// [`Freshness::Fresh`] iff `age <= ttl`. With it, returns [`Freshness::Stale`] when
/// the request's `max-age` is below `age`, when `age > ttl` and `max-stale` does not
/// allow that much staleness (no value = any), or when `min-fresh` is set and the
/// entry stays fresh for less than it; otherwise [`Freshness::Fresh`].
pub fn freshness(config: &Config, age: u64, ttl: u64, directives: &RequestDirectives) -> Freshness {
    if !config.cache_control {
        return if age <= ttl {
            Freshness::Fresh
        } else {
            Freshness::Stale
        };
    }
    if directives.max_age.is_some_and(|max_age| max_age < age) {
        return Freshness::Stale;
    }
    if age > ttl {
        let allowed = match directives.max_stale {
            None => false,
            Some(None) => true,
            Some(Some(max_stale)) => age - ttl <= max_stale,
        };
        if !allowed {
            return Freshness::Stale;
        }
    }
    if let Some(min_fresh) = directives.min_fresh {
        if i128::from(ttl) - i128::from(age) < i128::from(min_fresh) {
            return Freshness::Stale;
        }
    }
    Freshness::Fresh
}

/// Headers a stored response never sends again (Kong's list; `content-length` is
/// recomputed from the stored body).
const NOT_REPLAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Response headers a cache hit never replays (hop-by-hop, content-length, and any
/// header whose name contains `ratelimit-remaining`), per §6.2.
///
/// Runs for each stored header when a hit is answered. Returns `true` when the header
/// may be sent (names compared ignoring case).
pub fn replayable(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !NOT_REPLAYED.contains(&name.as_str()) && !name.contains("ratelimit-remaining")
}

/// Parsed `Cache-Control` (or `Pragma`) directives: lower-case names, unquoted
/// values, in order (a repeated directive's last value wins, as in Kong).
/// Whether a stored response forbids being served stale (`must-revalidate`,
/// `proxy-revalidate`): then neither a request's `max-stale` nor `stale_if_error`
/// may use it once its TTL has passed. Runs on a found entry's headers.
pub fn must_revalidate<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> bool {
    headers
        .filter(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
        .any(|(_, v)| {
            String::from_utf8_lossy(v).split(',').any(|d| {
                let d = d.trim().to_ascii_lowercase();
                d == "must-revalidate" || d == "proxy-revalidate"
            })
        })
}

struct Directives(Vec<(String, Option<String>)>);

impl Directives {
    /// Reads every `name` header of `headers` as one comma-separated list.
    fn of(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut out = Vec::new();
        for value in headers.get_all(name) {
            for item in split_unquoted(&String::from_utf8_lossy(value.as_bytes()), ',') {
                let item = item.trim();
                let (key, val) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                    None => (item, None),
                };
                if !key.is_empty() {
                    out.push((key.to_ascii_lowercase(), val));
                }
            }
        }
        Directives(out)
    }

    /// The directive's value: `None` when absent, `Some(None)` when it has no value.
    fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Whether the directive is present.
    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The directive's delta-seconds value; absent when missing or not a number.
    fn seconds(&self, name: &str) -> Option<u64> {
        self.get(name).flatten().and_then(delta_seconds)
    }
}

/// RFC 9111 delta-seconds: digits only; too large a value reads as 2^31.
fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(1 << 31))
}

/// Splits `s` at `sep`, except inside double-quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if c == '"' {
            quoted = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Removes the quotes and backslash escapes of a quoted-string; other values as is.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// Whether every header the response varies on is part of the key (`vary_headers`):
/// otherwise one client's variant (say a gzip body) could be served to a client that
/// asked for another. `Vary: *` is never covered. Beyond Kong, which ignores `Vary`.
fn vary_covered(headers: &HeaderMap, config: &Config) -> bool {
    let keyed = config.vary_headers.as_deref().unwrap_or(&[]);
    headers.get_all(VARY).iter().all(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .all(|t| t != "*" && keyed.iter().any(|k| k.eq_ignore_ascii_case(t)))
    })
}

/// Seconds from `now` until the last `Expires` header; `None` when absent or not an
/// HTTP-date (Kong then stores nothing), `Some(0)` when already past.
fn expires_in(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let value = headers.get_all(EXPIRES).iter().next_back()?.to_str().ok()?;
    let at = parse_http_date(value.trim())?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Some(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime) into Unix seconds. The
/// weekday is not checked, as in nginx.
fn parse_http_date(s: &str) -> Option<i64> {
    use chrono::NaiveDateTime;
    let parsed = if let Some((_, rest)) = s.split_once(',') {
        let rest = rest.trim();
        NaiveDateTime::parse_from_str(rest, "%d %b %Y %H:%M:%S GMT")
            .or_else(|_| NaiveDateTime::parse_from_str(rest, "%d-%b-%y %H:%M:%S GMT"))
    } else {
        let (_, rest) = s.split_once(' ')?;
        NaiveDateTime::parse_from_str(rest.trim(), "%b %e %H:%M:%S %Y")
    };
    parsed.ok().map(|t| t.and_utc().timestamp())
}

/// A media type: lower-case type and subtype, parameters with lower-case names and
/// unquoted values (a repeated name keeps its last value).
/// Whether `s` parses as a media type (`type/subtype; params`); runs at config load.
pub fn is_media_type(s: &str) -> bool {
    MediaType::parse(s).is_some()
}

struct MediaType {
    main: String,
    sub: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype; name=value; ...` (a bare `*` reads as `*/*`); `None`
    /// when malformed.
    fn parse(s: &str) -> Option<Self> {
        let mut parts = split_unquoted(s, ';').into_iter();
        let essence = parts.next()?.trim();
        let (main, sub) = if essence == "*" {
            ("*", "*")
        } else {
            essence.split_once('/')?
        };
        if !is_token(main) || !is_token(sub) {
            return None;
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) = part.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            if !is_token(&name) {
                return None;
            }
            let value = unquote(value.trim());
            params.retain(|(n, _)| *n != name);
            params.push((name, value));
        }
        Some(MediaType {
            main: main.to_ascii_lowercase(),
            sub: sub.to_ascii_lowercase(),
            params,
        })
    }

    /// Whether this configured entry accepts the response's `actual` type.
    fn accepts(&self, actual: &MediaType, mode: ParamMatch) -> bool {
        let types = (self.main == "*" || self.main == actual.main)
            && (self.sub == "*" || self.sub == actual.sub);
        if !types {
            return false;
        }
        if mode == ParamMatch::Ignore && self.params.is_empty() {
            return true;
        }
        self.params.len() == actual.params.len()
            && self
                .params
                .iter()
                .all(|(n, v)| actual.params.iter().any(|(an, av)| an == n && av == v))
    }
}

/// RFC 9110 token: one or more visible characters that are not separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fields::Errors;
    use http::HeaderValue;
    use std::time::Duration;

    fn config(extra: &str) -> Config {
        let yaml = format!("strategy: memory\n{extra}");
        let node = crate::config::yaml::parse(&yaml).unwrap();
        let mut errs = Errors::default();
        let c = super::super::config::decode(Some(&node), "config", &mut errs);
        assert!(errs.list.is_empty(), "{:#?}", errs.list);
        c.unwrap()
    }

    fn cc_config() -> Config {
        config("cache_control: true\n")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// 2024-01-01T00:00:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_067_200)
    }

    fn store(c: &Config, status: u16, pairs: &[(&str, &str)]) -> Option<Storable> {
        response(c, status, &headers(pairs), now())
    }

    fn json(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![("content-type", "application/json")];
        v.extend_from_slice(extra);
        v
    }

    fn lookup(c: &Config, method: Method, pairs: &[(&str, &str)]) -> RequestDecision {
        request(c, &method, &headers(pairs))
    }

    fn directives(c: &Config, cc: &str) -> RequestDirectives {
        match lookup(c, Method::GET, &[("cache-control", cc)]) {
            RequestDecision::Lookup(d) => d,
            RequestDecision::Bypass => panic!("unexpected bypass for {cc}"),
        }
    }

    // ---- request -------------------------------------------------------------

    #[test]
    fn methods_outside_request_method_bypass() {
        let c = config("");
        assert_eq!(
            lookup(&c, Method::GET, &[]),
            RequestDecision::Lookup(RequestDirectives::default())
        );
        assert!(matches!(
            lookup(&c, Method::HEAD, &[]),
            RequestDecision::Lookup(_)
        ));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(lookup(&c, m, &[]), RequestDecision::Bypass);
        }
        let c = config("request_method: [POST]\n");
        assert!(matches!(
            lookup(&c, Method::POST, &[]),
            RequestDecision::Lookup(_)
        ));
        assert_eq!(lookup(&c, Method::GET, &[]), RequestDecision::Bypass);
    }

    #[test]
    fn no_store_and_no_cache_bypass_only_with_cache_control() {
        let c = cc_config();
        for v in [
            "no-store",
            "no-cache",
            "NO-CACHE",
            "max-age=5, no-store",
            "no-cache=\"x\"",
        ] {
            assert_eq!(
                lookup(&c, Method::GET, &[("cache-control", v)]),
                RequestDecision::Bypass,
                "{v}"
            );
        }
        // Split over several headers.
        assert_eq!(
            lookup(
                &c,
                Method::GET,
                &[
                    ("cache-control", "max-age=5"),
                    ("cache-control", "no-cache")
                ]
            ),
            RequestDecision::Bypass
        );
        let off = config("");
        assert!(matches!(
            lookup(
                &off,
                Method::GET,
                &[("cache-control", "no-store, no-cache")]
            ),
            RequestDecision::Lookup(_)
        ));
    }

    #[test]
    fn pragma_no_cache_bypasses_without_cache_control_header() {
        let c = cc_config();
        assert_eq!(
            lookup(&c, Method::GET, &[("pragma", "no-cache")]),
            RequestDecision::Bypass
        );
        assert_eq!(
            lookup(&c, Method::GET, &[("pragma", "foo, No-Cache")]),
            RequestDecision::Bypass
        );
        // Cache-Control wins over Pragma.
        assert!(matches!(
            lookup(
                &c,
                Method::GET,
                &[("pragma", "no-cache"), ("cache-control", "max-age=5")]
            ),
            RequestDecision::Lookup(_)
        ));
        assert!(matches!(
            lookup(&config(""), Method::GET, &[("pragma", "no-cache")]),
            RequestDecision::Lookup(_)
        ));
    }

    #[test]
    fn request_directives_are_parsed_with_cache_control() {
        let c = cc_config();
        assert_eq!(
            directives(
                &c,
                "Max-Age=10, max-stale=20, MIN-FRESH=\"30\", only-if-cached"
            ),
            RequestDirectives {
                max_age: Some(10),
                max_stale: Some(Some(20)),
                min_fresh: Some(30),
                only_if_cached: true,
            }
        );
        assert_eq!(directives(&c, "max-stale").max_stale, Some(None));
        assert_eq!(directives(&c, " max-stale , foo").max_stale, Some(None));
        assert_eq!(directives(&c, "max-age=0").max_age, Some(0));
        // Unknown directives, quoted commas and bad numbers.
        assert_eq!(
            directives(
                &c,
                "ext=\"a, no-cache\", max-age=abc, min-fresh=-1, max-stale=1.5"
            ),
            RequestDirectives::default()
        );
        assert_eq!(directives(&c, "max-age=").max_age, None);
        assert_eq!(
            directives(&c, "max-age=99999999999999999999999").max_age,
            Some(1 << 31)
        );
        // Last repeated value wins.
        assert_eq!(directives(&c, "max-age=1, max-age=2").max_age, Some(2));
    }

    #[test]
    fn directives_are_ignored_without_cache_control_except_only_if_cached() {
        let c = config("");
        assert_eq!(
            directives(&c, "max-age=10, max-stale=20, min-fresh=30"),
            RequestDirectives::default()
        );
        assert_eq!(
            directives(&c, "only-if-cached"),
            RequestDirectives {
                only_if_cached: true,
                ..RequestDirectives::default()
            }
        );
        assert!(directives(&cc_config(), "ONLY-IF-CACHED").only_if_cached);
    }

    // ---- response: status, safety ---------------------------------------------

    #[test]
    fn status_must_be_listed() {
        let c = config("");
        for s in [200, 301, 404] {
            assert!(store(&c, s, &json(&[])).is_some(), "{s}");
        }
        for s in [201, 302, 304, 400] {
            assert!(store(&c, s, &json(&[])).is_none(), "{s}");
        }
    }

    #[test]
    fn must_revalidate_is_found_in_any_cache_control() {
        let h = |v: &'static str| vec![("cache-control", v.as_bytes())];
        assert!(must_revalidate(h("max-age=5, Must-Revalidate").into_iter()));
        assert!(must_revalidate(h("proxy-revalidate").into_iter()));
        assert!(!must_revalidate(h("max-age=5").into_iter()));
        assert!(!must_revalidate(
            vec![("x-other", &b"must-revalidate"[..])].into_iter()
        ));
    }

    #[test]
    fn unsafe_responses_are_never_stored() {
        for c in [
            config("response_code: [200, 206, 500, 503]\n"),
            config("response_code: [200, 206, 500, 503]\ncache_control: true\n"),
        ] {
            let fine = json(&[("cache-control", "max-age=60")]);
            assert!(store(&c, 200, &fine).is_some());
            assert!(store(&c, 500, &fine).is_none());
            assert!(store(&c, 503, &fine).is_none());
            assert!(store(&c, 206, &fine).is_none());
            for extra in [
                ("set-cookie", "a=b"),
                ("cache-control", "private"),
                ("cache-control", "private=\"x-user\""),
                ("cache-control", "No-Store"),
                ("vary", "*"),
                ("vary", "accept, *"),
            ] {
                let mut h = fine.clone();
                h.push(extra);
                assert!(store(&c, 200, &h).is_none(), "{extra:?}");
            }
            // A Vary on a header outside the key is not stored either.
            let mut h = fine.clone();
            h.push(("vary", "accept"));
            assert!(store(&c, 200, &h).is_none());
        }
        let c = config("vary_headers: [Accept]\n");
        let h = json(&[("vary", "accept")]);
        assert!(store(&c, 200, &h).is_some());
    }

    // ---- response: content type ------------------------------------------------

    fn ct_matches(entries: &str, mode: &str, actual: &str) -> bool {
        let c = config(&format!(
            "content_type: {entries}\ncontent_type_parameters: {mode}\n"
        ));
        store(&c, 200, &[("content-type", actual)]).is_some()
    }

    #[test]
    fn content_type_table_exact() {
        let cases: &[(&str, &str, bool)] = &[
            ("[application/json]", "application/json", true),
            ("[application/json]", "APPLICATION/Json", true),
            (
                "[application/json]",
                "application/json; charset=utf-8",
                false,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json",
                false,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json; charset=utf-8",
                true,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json;CHARSET=\"utf-8\"",
                true,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json; charset=UTF-8",
                false,
            ),
            ("[application/xml]", "application/xml; charset=UTF-8", false),
            (
                "[\"application/xml; charset=UTF-8\"]",
                "application/xml; charset=UTF-8",
                true,
            ),
            ("[\"text/plain; a=1; b=2\"]", "text/plain; b=2; a=1", true),
            ("[\"text/plain; a=1\"]", "text/plain; a=1; b=2", false),
            ("[\"*/*\"]", "image/png", true),
            ("[\"*/*\"]", "application/vnd.api+json", true),
            ("[\"*/*\"]", "text/html; charset=utf-8", false),
            ("[\"text/*\"]", "text/html", true),
            ("[\"text/*\"]", "application/html", false),
            ("[\"*/json\"]", "application/json", true),
            ("[\"*\"]", "text/css", true),
            ("[text/plain, application/json]", "text/plain", true),
            ("[text/plain]", "text/plainx", false),
            ("[text/plain]", "not a type", false),
            ("[text/plain]", "text/plain; charset", false),
        ];
        for (entries, actual, expect) in cases {
            assert_eq!(
                ct_matches(entries, "exact", actual),
                *expect,
                "{entries} vs {actual}"
            );
        }
    }

    #[test]
    fn content_type_table_ignore() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "[application/json]",
                "application/json; charset=utf-8",
                true,
            ),
            ("[application/json]", "application/json", true),
            ("[application/xml]", "application/xml; charset=UTF-8", true),
            ("[application/json]", "text/plain; charset=utf-8", false),
            ("[\"*/*\"]", "text/html; charset=utf-8", true),
            // An entry with parameters still needs them identical.
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json",
                false,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json; charset=latin1",
                false,
            ),
            (
                "[\"application/json; charset=utf-8\"]",
                "application/json; charset=utf-8",
                true,
            ),
        ];
        for (entries, actual, expect) in cases {
            assert_eq!(
                ct_matches(entries, "ignore", actual),
                *expect,
                "{entries} vs {actual}"
            );
        }
    }

    #[test]
    fn content_type_must_be_single_and_non_empty() {
        let c = config("");
        assert!(store(&c, 200, &[]).is_none());
        assert!(store(&c, 200, &[("content-type", "")]).is_none());
        assert!(store(&c, 200, &[("content-type", "  ")]).is_none());
        assert!(store(
            &c,
            200,
            &[
                ("content-type", "application/json"),
                ("content-type", "application/json")
            ]
        )
        .is_none());
        assert!(store(&c, 200, &[("content-type", "text/plain")]).is_some());
        assert!(store(&c, 200, &[("content-type", "text/html")]).is_none());
    }

    // ---- response: TTLs --------------------------------------------------------

    #[test]
    fn without_cache_control_ttl_is_cache_ttl() {
        let c = config("cache_ttl: 42\n");
        let s = store(&c, 200, &json(&[("cache-control", "max-age=5, no-cache")]));
        assert_eq!(
            s,
            Some(Storable {
                ttl: 42,
                storage_ttl: 42
            })
        );
    }

    #[test]
    fn cache_control_ttl_precedence() {
        let c = cc_config();
        let ttl =
            |extra: &[(&'static str, &'static str)]| store(&c, 200, &json(extra)).map(|s| s.ttl);
        let in_100 = "Mon, 01 Jan 2024 00:01:40 GMT";
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=20, s-maxage=10"),
                ("expires", in_100)
            ]),
            Some(10)
        );
        assert_eq!(
            ttl(&[("cache-control", "public, max-age=20"), ("expires", in_100)]),
            Some(20)
        );
        assert_eq!(
            ttl(&[("cache-control", "public"), ("expires", in_100)]),
            Some(100)
        );
        assert_eq!(ttl(&[("expires", in_100)]), Some(100));
        // Quoted and bad values.
        assert_eq!(ttl(&[("cache-control", "max-age=\"30\"")]), Some(30));
        assert_eq!(
            ttl(&[("cache-control", "s-maxage=x, max-age=30")]),
            Some(30)
        );
        // Last Expires wins.
        assert_eq!(
            ttl(&[
                ("expires", "Mon, 01 Jan 2024 00:00:10 GMT"),
                ("expires", in_100)
            ]),
            Some(100)
        );
    }

    #[test]
    fn cache_control_zero_or_missing_ttl_is_not_stored() {
        let c = cc_config();
        let none = |extra: &[(&'static str, &'static str)]| store(&c, 200, &json(extra)).is_none();
        assert!(none(&[("cache-control", "max-age=0")]));
        assert!(none(&[("cache-control", "s-maxage=0, max-age=60")]));
        assert!(none(&[("cache-control", "no-cache, max-age=60")]));
        assert!(none(&[("expires", "Sun, 31 Dec 2023 23:59:00 GMT")]));
        assert!(none(&[("expires", "Mon, 01 Jan 2024 00:00:00 GMT")]));
        assert!(none(&[("expires", "0")]));
        // Kong: no s-maxage, max-age or Expires gives a TTL of 0.
        assert!(none(&[]));
        assert!(none(&[("cache-control", "public")]));
    }

    #[test]
    fn storage_ttl_is_at_least_ttl_plus_stale_if_error() {
        let c = config("cache_ttl: 30\nstorage_ttl: 600\n");
        assert_eq!(store(&c, 200, &json(&[])).map(|s| s.storage_ttl), Some(600));
        let c = config("cache_ttl: 30\nstorage_ttl: 10\n");
        assert_eq!(store(&c, 200, &json(&[])).map(|s| s.storage_ttl), Some(30));
        let c = config("cache_ttl: 30\nstale_if_error: 15\n");
        assert_eq!(
            store(&c, 200, &json(&[])),
            Some(Storable {
                ttl: 30,
                storage_ttl: 45
            })
        );
        let c = config("cache_control: true\nstorage_ttl: 100\nstale_if_error: 5\n");
        assert_eq!(
            store(&c, 200, &json(&[("cache-control", "max-age=200")])),
            Some(Storable {
                ttl: 200,
                storage_ttl: 205
            })
        );
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let want = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), want);
        // The weekday is not checked.
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(parse_http_date("06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 +0100"), None);
        assert_eq!(parse_http_date("-1"), None);
        assert_eq!(parse_http_date(""), None);
    }

    // ---- freshness ---------------------------------------------------------------

    #[test]
    fn freshness_without_cache_control_is_age_against_ttl() {
        let c = config("");
        let d = RequestDirectives {
            max_age: Some(0),
            ..RequestDirectives::default()
        };
        assert_eq!(freshness(&c, 0, 300, &d), Freshness::Fresh);
        assert_eq!(freshness(&c, 300, 300, &d), Freshness::Fresh);
        assert_eq!(freshness(&c, 301, 300, &d), Freshness::Stale);
    }

    #[test]
    fn freshness_with_cache_control() {
        let c = cc_config();
        let none = RequestDirectives::default();
        assert_eq!(freshness(&c, 10, 60, &none), Freshness::Fresh);
        assert_eq!(freshness(&c, 60, 60, &none), Freshness::Fresh);
        assert_eq!(freshness(&c, 61, 60, &none), Freshness::Stale);

        let max_age = |v| RequestDirectives {
            max_age: Some(v),
            ..RequestDirectives::default()
        };
        assert_eq!(freshness(&c, 10, 60, &max_age(10)), Freshness::Fresh);
        assert_eq!(freshness(&c, 11, 60, &max_age(10)), Freshness::Stale);
        assert_eq!(freshness(&c, 1, 60, &max_age(0)), Freshness::Stale);

        let max_stale = |v| RequestDirectives {
            max_stale: Some(v),
            ..RequestDirectives::default()
        };
        assert_eq!(
            freshness(&c, 70, 60, &max_stale(Some(10))),
            Freshness::Fresh
        );
        assert_eq!(
            freshness(&c, 71, 60, &max_stale(Some(10))),
            Freshness::Stale
        );
        assert_eq!(freshness(&c, 61, 60, &max_stale(Some(0))), Freshness::Stale);
        assert_eq!(freshness(&c, 9_999, 60, &max_stale(None)), Freshness::Fresh);

        let min_fresh = |v| RequestDirectives {
            min_fresh: Some(v),
            ..RequestDirectives::default()
        };
        assert_eq!(freshness(&c, 50, 60, &min_fresh(10)), Freshness::Fresh);
        assert_eq!(freshness(&c, 51, 60, &min_fresh(10)), Freshness::Stale);
        assert_eq!(freshness(&c, 60, 60, &min_fresh(0)), Freshness::Fresh);
        // Past its TTL an entry never satisfies min-fresh, even with max-stale.
        let both = RequestDirectives {
            max_stale: Some(None),
            min_fresh: Some(0),
            ..RequestDirectives::default()
        };
        assert_eq!(freshness(&c, 61, 60, &both), Freshness::Stale);
        // max-age still applies within max-stale.
        let both = RequestDirectives {
            max_age: Some(65),
            max_stale: Some(None),
            ..RequestDirectives::default()
        };
        assert_eq!(freshness(&c, 65, 60, &both), Freshness::Fresh);
        assert_eq!(freshness(&c, 66, 60, &both), Freshness::Stale);
    }

    // ---- replayable ------------------------------------------------------------

    #[test]
    fn replayable_drops_hop_by_hop_and_rate_limit_counters() {
        for h in [
            "Connection",
            "keep-alive",
            "Proxy-Authenticate",
            "proxy-authorization",
            "TE",
            "trailers",
            "Transfer-Encoding",
            "upgrade",
            "Content-Length",
            "X-RateLimit-Remaining-Minute",
            "RateLimit-Remaining",
        ] {
            assert!(!replayable(h), "{h}");
        }
        for h in [
            "content-type",
            "etag",
            "cache-control",
            "X-RateLimit-Limit-Minute",
            "RateLimit-Reset",
            "vary",
        ] {
            assert!(replayable(h), "{h}");
        }
    }
}
