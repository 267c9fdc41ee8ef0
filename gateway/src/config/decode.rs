//! Kong declarative YAML (`_format_version` 3.0, and 1.1/2.1 migrated) → [`Config`].
//!
//! The walk records every problem with its field path and line and goes on, so one
//! run of `gateway check` lists them all. References between entities (a top-level
//! route's `service`, a plugin's `route`, an sni's `certificate`) are resolved after
//! every entity has been read.

use std::collections::HashMap;
use std::time::Duration;

use regex::Regex;
use uuid::Uuid;

use super::fields::{index, join, Errors, Fields};
use super::ids;
use super::model::*;
use super::yaml::{Node, Value};
use crate::plugins;
use crate::router::normalize::normalize_path;

const TOP_KEYS: &[&str] = &[
    "_format_version",
    "_transform",
    "_workspace",
    "services",
    "routes",
    "consumers",
    "plugins",
    "certificates",
    "snis",
    "keyauth_credentials",
    "jwt_secrets",
    "acls",
    "upstreams",
    "targets",
    "ca_certificates",
    "vaults",
    "keys",
    "key_sets",
    "parameters",
    "basicauth_credentials",
    "hmacauth_credentials",
    "oauth2_credentials",
];

/// Entities Kong knows that this gateway does not handle yet.
const NOT_YET_SUPPORTED: &[&str] = &[
    "upstreams",
    "targets",
    "ca_certificates",
    "vaults",
    "keys",
    "key_sets",
    "parameters",
    "basicauth_credentials",
    "hmacauth_credentials",
    "oauth2_credentials",
];

const SERVICE_KEYS: &[&str] = &[
    "id",
    "name",
    "url",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
    "enabled",
    "tags",
    "tls_verify",
    "tls_verify_depth",
    "ca_certificates",
    "client_certificate",
    "routes",
    "plugins",
];

const ROUTE_KEYS: &[&str] = &[
    "id",
    "name",
    "service",
    "protocols",
    "methods",
    "hosts",
    "paths",
    "headers",
    "snis",
    "sources",
    "destinations",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "path_handling",
    "https_redirect_status_code",
    "request_buffering",
    "response_buffering",
    "tags",
    "plugins",
];

const PLUGIN_KEYS: &[&str] = &[
    "id",
    "name",
    "instance_name",
    "config",
    "enabled",
    "protocols",
    "tags",
    "service",
    "route",
    "consumer",
];

const CONSUMER_KEYS: &[&str] = &[
    "id",
    "username",
    "custom_id",
    "tags",
    "plugins",
    "keyauth_credentials",
    "jwt_secrets",
    "acls",
];

const TIMEOUT_MAX: i64 = (1 << 31) - 2;

/// A reference to another entity, by name or id, and where it was written.
struct Ref {
    value: String,
    path: String,
    line: usize,
}

struct PendingRoute {
    route: Route,
    service_ref: Option<Ref>,
    service_idx: Option<usize>,
    path: String,
    line: usize,
}

struct PendingPlugin {
    plugin: PluginInstance,
    service: Option<Ref>,
    route: Option<Ref>,
    consumer: Option<Ref>,
    path: String,
    line: usize,
}

enum CredKind {
    KeyAuth(KeyAuthCredential),
    Jwt(JwtSecret),
    Acl(String),
}

struct PendingCredential {
    kind: CredKind,
    consumer_idx: Option<usize>,
    consumer_ref: Option<Ref>,
}

struct PendingSni {
    name: String,
    cert_ref: Ref,
}

#[derive(Default)]
struct Decoder {
    errs: Errors,
    legacy_format: bool,
    services: Vec<(Service, String, usize)>,
    routes: Vec<PendingRoute>,
    plugins: Vec<PendingPlugin>,
    consumers: Vec<(Consumer, String, usize)>,
    credentials: Vec<PendingCredential>,
    certificates: Vec<Certificate>,
    snis: Vec<PendingSni>,
}

/// Decodes a parsed config document.
///
/// Runs at every config load (start, `gateway check`, reload). Returns the model, or
/// every error found, each located by field path and line.
pub fn decode(root: &Node, hash: String) -> Result<Config, Vec<super::fields::FieldError>> {
    let mut d = Decoder::default();
    d.top(root);
    let config = d.resolve(hash);
    if d.errs.list.is_empty() {
        Ok(config)
    } else {
        Err(d.errs.list)
    }
}

impl Decoder {
    fn top(&mut self, root: &Node) {
        if root.value == Value::Null {
            self.errs.push("", root.line, "the file is empty");
            return;
        }
        let Some(top) = Fields::open(root, "", TOP_KEYS, &mut self.errs) else {
            return;
        };
        match top.node("_format_version") {
            None => self
                .errs
                .push("_format_version", top.line, "required field missing"),
            Some(node) => match &node.value {
                Value::Str(v) if v == "3.0" => {}
                Value::Str(v) if v == "1.1" || v == "2.1" => self.legacy_format = true,
                Value::Str(_) => self.errs.push(
                    "_format_version",
                    node.line,
                    "expected one of: 1.1, 2.1, 3.0",
                ),
                _ => self
                    .errs
                    .push("_format_version", node.line, "expected a string"),
            },
        }
        top.bool("_transform", true, &mut self.errs);
        for key in NOT_YET_SUPPORTED {
            if top.has(key) {
                self.errs.push(
                    key,
                    top.line_of(key),
                    format!("'{key}' entities are not supported by this gateway yet"),
                );
            }
        }
        let services: Vec<(&Node, String)> = items(&top, "services", &mut self.errs);
        for (node, path) in services {
            self.service(node, &path);
        }
        for (node, path) in items(&top, "routes", &mut self.errs) {
            self.route(node, &path, None);
        }
        for (node, path) in items(&top, "consumers", &mut self.errs) {
            self.consumer(node, &path);
        }
        for (node, path) in items(&top, "plugins", &mut self.errs) {
            self.plugin(node, &path, PluginParent::None);
        }
        for (node, path) in items(&top, "certificates", &mut self.errs) {
            self.certificate(node, &path);
        }
        for (node, path) in items(&top, "snis", &mut self.errs) {
            self.sni(node, &path);
        }
        for kind in ["keyauth_credentials", "jwt_secrets", "acls"] {
            for (node, path) in items(&top, kind, &mut self.errs) {
                self.credential(kind, node, &path, None);
            }
        }
    }

    fn id(&mut self, fields: &Fields<'_>, dao: &str, key: Option<&str>) -> Uuid {
        if let Some(id) = fields.str("id", &mut self.errs) {
            match Uuid::parse_str(&id) {
                Ok(u) => return u,
                Err(_) => self.errs.push(
                    &fields.path_of("id"),
                    fields.line_of("id"),
                    "expected a valid UUID",
                ),
            }
        }
        match key {
            Some(k) => ids::derived(dao, k),
            None => Uuid::new_v4(),
        }
    }

    fn service(&mut self, node: &Node, path: &str) {
        let Some(f) = Fields::open(node, path, SERVICE_KEYS, &mut self.errs) else {
            return;
        };
        let errs = &mut self.errs;
        let name = f.str("name", errs);
        if let Some(n) = &name {
            check_name(n, &f.path_of("name"), f.line_of("name"), errs);
        }
        let mut protocol = UpstreamScheme::Http;
        let mut host = None;
        let mut port = None;
        let mut svc_path = None;
        if let Some(url) = f.str("url", errs) {
            for key in ["protocol", "host", "port", "path"] {
                if f.has(key) {
                    errs.push(
                        &f.path_of(key),
                        f.line_of(key),
                        "cannot be set together with 'url'",
                    );
                }
            }
            match parse_url(&url) {
                Ok(parts) => {
                    protocol = parts.0;
                    host = Some(parts.1);
                    port = Some(parts.2);
                    svc_path = parts.3;
                }
                Err(msg) => errs.push(&f.path_of("url"), f.line_of("url"), msg),
            }
        } else {
            if let Some(p) = f.str("protocol", errs) {
                match parse_scheme(&p) {
                    Ok(s) => protocol = s,
                    Err(msg) => errs.push(&f.path_of("protocol"), f.line_of("protocol"), msg),
                }
            }
            match f.str("host", errs) {
                Some(h) => match check_host(&h) {
                    Ok(()) => host = Some(h),
                    Err(msg) => errs.push(&f.path_of("host"), f.line_of("host"), msg),
                },
                None => errs.push(&f.path_of("host"), f.line, "required field missing"),
            }
            if f.has("port") {
                port = Some(f.int("port", 0, 65535, 80, errs) as u16);
            }
            if let Some(p) = f.str("path", errs) {
                match check_service_path(&p) {
                    Ok(()) => svc_path = Some(p),
                    Err(msg) => errs.push(&f.path_of("path"), f.line_of("path"), msg),
                }
            }
        }
        let tls_verify = match f.node("tls_verify") {
            Some(_) => f.bool("tls_verify", false, errs),
            None => false,
        };
        if tls_verify && protocol != UpstreamScheme::Https {
            errs.push(
                &f.path_of("tls_verify"),
                f.line_of("tls_verify"),
                "value must be null for protocol 'http'",
            );
        }
        for key in ["ca_certificates", "client_certificate", "tls_verify_depth"] {
            if f.has(key) {
                errs.push(
                    &f.path_of(key),
                    f.line_of(key),
                    "not supported by this gateway yet",
                );
            }
        }
        let ms = |f: &Fields<'_>, key: &str, errs: &mut Errors| {
            Duration::from_millis(f.int(key, 1, TIMEOUT_MAX, 60_000, errs) as u64)
        };
        let service = Service {
            id: Uuid::nil(),
            name: name.clone(),
            protocol,
            host: host.unwrap_or_default(),
            port: port.unwrap_or(protocol.default_port()),
            path: svc_path,
            retries: f.int("retries", 0, 32767, 5, errs) as u32,
            connect_timeout: ms(&f, "connect_timeout", errs),
            write_timeout: ms(&f, "write_timeout", errs),
            read_timeout: ms(&f, "read_timeout", errs),
            enabled: f.bool("enabled", true, errs),
            tls_verify,
        };
        check_tags(&f, errs);
        let id = self.id(&f, "services", name.as_deref());
        let idx = self.services.len();
        self.services
            .push((Service { id, ..service }, path.to_string(), f.line));
        for (node, p) in items(&f, "routes", &mut self.errs) {
            self.route(node, &p, Some(idx));
        }
        for (node, p) in items(&f, "plugins", &mut self.errs) {
            self.plugin(node, &p, PluginParent::Service(idx));
        }
    }

    fn route(&mut self, node: &Node, path: &str, service_idx: Option<usize>) {
        let Some(f) = Fields::open(node, path, ROUTE_KEYS, &mut self.errs) else {
            return;
        };
        let legacy = self.legacy_format;
        let errs = &mut self.errs;
        let name = f.str("name", errs);
        if let Some(n) = &name {
            check_name(n, &f.path_of("name"), f.line_of("name"), errs);
        }
        let service_ref = f.str("service", errs).map(|value| Ref {
            value,
            path: f.path_of("service"),
            line: f.line_of("service"),
        });
        if service_idx.is_some() && service_ref.is_some() {
            errs.push(
                &f.path_of("service"),
                f.line_of("service"),
                "value must be null",
            );
        }
        let protocols = route_protocols(&f, errs);
        let methods = f
            .str_list("methods", errs)
            .into_iter()
            .filter_map(|(m, p, line)| {
                let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                if !ok {
                    errs.push(
                        &p,
                        line,
                        "invalid value: expected an upper-case method token",
                    );
                }
                ok.then_some(m)
            })
            .collect::<Vec<_>>();
        let hosts = f
            .str_list("hosts", errs)
            .into_iter()
            .filter_map(|(h, p, line)| match parse_host_pattern(&h) {
                Ok(hp) => Some(hp),
                Err(msg) => {
                    errs.push(&p, line, msg);
                    None
                }
            })
            .collect::<Vec<_>>();
        let paths = f
            .str_list("paths", errs)
            .into_iter()
            .filter_map(|(raw, p, line)| {
                let raw = if legacy {
                    migrate_legacy_path(&raw)
                } else {
                    raw
                };
                match parse_path_pattern(&raw) {
                    Ok(pp) => Some(pp),
                    Err(msg) => {
                        errs.push(&p, line, msg);
                        None
                    }
                }
            })
            .collect::<Vec<_>>();
        let headers = route_headers(&f, errs);
        for key in ["snis", "sources", "destinations"] {
            if f.has(key) {
                errs.push(
                    &f.path_of(key),
                    f.line_of(key),
                    "not supported by this gateway yet",
                );
            }
        }
        if let Some(ph) = f.str("path_handling", errs) {
            if ph != "v0" && ph != "v1" {
                errs.push(
                    &f.path_of("path_handling"),
                    f.line_of("path_handling"),
                    "expected one of: v0, v1",
                );
            }
        }
        let https_redirect_status_code =
            f.int("https_redirect_status_code", 0, 999, 426, errs) as u16;
        if ![426, 301, 302, 307, 308].contains(&https_redirect_status_code) {
            errs.push(
                &f.path_of("https_redirect_status_code"),
                f.line_of("https_redirect_status_code"),
                "expected one of: 426, 301, 302, 307, 308",
            );
        }
        if !["methods", "hosts", "paths", "headers"]
            .iter()
            .any(|k| f.has(k))
        {
            let msg = if protocols.https && !protocols.http {
                "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"
            } else {
                "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
            };
            errs.push(path, f.line, msg);
        }
        let route = Route {
            id: Uuid::nil(),
            name: name.clone(),
            service: service_idx,
            protocols,
            methods,
            hosts,
            paths,
            headers,
            strip_path: f.bool("strip_path", true, errs),
            preserve_host: f.bool("preserve_host", false, errs),
            regex_priority: f.int("regex_priority", i64::MIN, i64::MAX, 0, errs),
            https_redirect_status_code,
        };
        f.bool("request_buffering", true, errs);
        f.bool("response_buffering", true, errs);
        check_tags(&f, errs);
        let id = self.id(&f, "routes", name.as_deref());
        let idx = self.routes.len();
        self.routes.push(PendingRoute {
            route: Route { id, ..route },
            service_ref,
            service_idx,
            path: path.to_string(),
            line: f.line,
        });
        for (node, p) in items(&f, "plugins", &mut self.errs) {
            self.plugin(node, &p, PluginParent::Route(idx));
        }
    }

    fn plugin(&mut self, node: &Node, path: &str, parent: PluginParent) {
        let Some(f) = Fields::open(node, path, PLUGIN_KEYS, &mut self.errs) else {
            return;
        };
        let errs = &mut self.errs;
        let reference = |key: &str, errs: &mut Errors| {
            f.str(key, errs).map(|value| Ref {
                value,
                path: f.path_of(key),
                line: f.line_of(key),
            })
        };
        let service = reference("service", errs);
        let route = reference("route", errs);
        let consumer = reference("consumer", errs);
        let nested_ref = match parent {
            PluginParent::Service(_) => service.as_ref(),
            PluginParent::Route(_) => route.as_ref(),
            PluginParent::Consumer(_) => consumer.as_ref(),
            PluginParent::None => None,
        };
        if let Some(r) = nested_ref {
            errs.push(&r.path, r.line, "value must be null");
        }
        let name = f.str("name", errs);
        let config = match &name {
            None => {
                errs.push(&f.path_of("name"), f.line, "required field missing");
                None
            }
            Some(n) => plugins::decode(
                n,
                f.node("config"),
                &f.path_of("name"),
                f.line_of("name"),
                &f.path_of("config"),
                errs,
            ),
        };
        let enabled = f.bool("enabled", true, errs);
        f.str("instance_name", errs);
        f.str_list("protocols", errs);
        check_tags(&f, errs);
        let id = self.id(&f, "plugins", None);
        let (Some(name), Some(config)) = (name, config) else {
            return;
        };
        let mut scope = PluginScope::default();
        match parent {
            PluginParent::Service(i) => scope.service = Some(i),
            PluginParent::Route(i) => scope.route = Some(i),
            PluginParent::Consumer(i) => scope.consumer = Some(i),
            PluginParent::None => {}
        }
        self.plugins.push(PendingPlugin {
            plugin: PluginInstance {
                id,
                name,
                scope,
                enabled,
                config,
            },
            service: if matches!(parent, PluginParent::Service(_)) {
                None
            } else {
                service
            },
            route: if matches!(parent, PluginParent::Route(_)) {
                None
            } else {
                route
            },
            consumer: if matches!(parent, PluginParent::Consumer(_)) {
                None
            } else {
                consumer
            },
            path: path.to_string(),
            line: f.line,
        });
    }

    fn consumer(&mut self, node: &Node, path: &str) {
        let Some(f) = Fields::open(node, path, CONSUMER_KEYS, &mut self.errs) else {
            return;
        };
        let username = f.str("username", &mut self.errs);
        let custom_id = f.str("custom_id", &mut self.errs);
        if username.is_none() && custom_id.is_none() {
            self.errs.push(
                path,
                f.line,
                "at least one of these fields must be non-empty: 'custom_id', 'username'",
            );
        }
        check_tags(&f, &mut self.errs);
        let id = self.id(&f, "consumers", username.as_deref());
        let idx = self.consumers.len();
        self.consumers.push((
            Consumer {
                id,
                username,
                custom_id,
                keyauth_credentials: Vec::new(),
                jwt_secrets: Vec::new(),
                acls: Vec::new(),
            },
            path.to_string(),
            f.line,
        ));
        for kind in ["keyauth_credentials", "jwt_secrets", "acls"] {
            for (node, p) in items(&f, kind, &mut self.errs) {
                self.credential(kind, node, &p, Some(idx));
            }
        }
        for (node, p) in items(&f, "plugins", &mut self.errs) {
            self.plugin(node, &p, PluginParent::Consumer(idx));
        }
    }

    fn credential(&mut self, kind: &str, node: &Node, path: &str, consumer_idx: Option<usize>) {
        let allowed: &[&str] = match kind {
            "keyauth_credentials" => &["id", "key", "consumer", "tags", "ttl"],
            "jwt_secrets" => &[
                "id",
                "key",
                "algorithm",
                "secret",
                "rsa_public_key",
                "consumer",
                "tags",
                "secret_is_base64",
            ],
            _ => &["id", "group", "consumer", "tags"],
        };
        let Some(f) = Fields::open(node, path, allowed, &mut self.errs) else {
            return;
        };
        let errs = &mut self.errs;
        let consumer_ref = f.str("consumer", errs).map(|value| Ref {
            value,
            path: f.path_of("consumer"),
            line: f.line_of("consumer"),
        });
        match (&consumer_idx, &consumer_ref) {
            (Some(_), Some(r)) => errs.push(&r.path, r.line, "value must be null"),
            (None, None) => errs.push(&f.path_of("consumer"), f.line, "required field missing"),
            _ => {}
        }
        check_tags(&f, errs);
        let id = match f.str("id", errs).map(|s| Uuid::parse_str(&s)) {
            Some(Ok(u)) => u,
            Some(Err(_)) => {
                errs.push(&f.path_of("id"), f.line_of("id"), "expected a valid UUID");
                Uuid::nil()
            }
            None => Uuid::new_v4(),
        };
        let cred = match kind {
            "keyauth_credentials" => {
                f.int("ttl", 0, 100_000_000, 0, errs);
                let key = match f.str("key", errs) {
                    Some(k) if !k.is_empty() => k,
                    _ => {
                        // Kong would generate one; a generated key nobody can read is useless
                        // in a declarative file, so ask for it.
                        errs.push(
                            &f.path_of("key"),
                            f.line_of("key"),
                            "required field missing",
                        );
                        return;
                    }
                };
                CredKind::KeyAuth(KeyAuthCredential { id, key })
            }
            "jwt_secrets" => {
                use crate::plugins::jwt::{base64_lenient, Alg, VerifyKey};
                let algorithm = f
                    .str("algorithm", errs)
                    .unwrap_or_else(|| "HS256".to_string());
                const ALGS: &[&str] = &[
                    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                    "PS256", "PS384", "PS512", "EdDSA",
                ];
                let alg = if algorithm == "ES512" {
                    errs.push(
                        &f.path_of("algorithm"),
                        f.line_of("algorithm"),
                        "ES512 is not supported by this gateway (its verifier has no P-521 curve); use ES256 or ES384",
                    );
                    None
                } else if !ALGS.contains(&algorithm.as_str()) {
                    errs.push(
                        &f.path_of("algorithm"),
                        f.line_of("algorithm"),
                        format!("expected one of: {}", ALGS.join(", ")),
                    );
                    None
                } else {
                    Alg::from_name(&algorithm)
                };
                let rsa_public_key = f.str("rsa_public_key", errs);
                let secret = f.str("secret", errs);
                let secret_is_base64 = f.bool("secret_is_base64", false, errs);
                match alg {
                    Some(alg) if algorithm.starts_with("HS") => match &secret {
                        // Kong would generate one; a generated secret nobody can read
                        // is useless in a declarative file, so ask for it.
                        None => errs.push(
                            &f.path_of("secret"),
                            f.line,
                            format!("required field missing for algorithm {alg}"),
                        ),
                        Some(s) if s.is_empty() => errs.push(
                            &f.path_of("secret"),
                            f.line_of("secret"),
                            "length must be at least 1",
                        ),
                        Some(s) if secret_is_base64 && base64_lenient(s).is_none() => errs.push(
                            &f.path_of("secret"),
                            f.line_of("secret"),
                            "secret_is_base64 is set but the secret is not valid base64",
                        ),
                        Some(_) => {}
                    },
                    Some(alg) => match &rsa_public_key {
                        None => errs.push(
                            &f.path_of("rsa_public_key"),
                            f.line,
                            format!("required field missing for algorithm {algorithm}"),
                        ),
                        Some(pem) => {
                            if let Err(e) = VerifyKey::from_pem(alg, pem) {
                                errs.push(
                                    &f.path_of("rsa_public_key"),
                                    f.line_of("rsa_public_key"),
                                    format!("invalid key for {algorithm}: {e}"),
                                );
                            }
                        }
                    },
                    None => {}
                }
                let Some(key) = f.str("key", errs) else {
                    errs.push(&f.path_of("key"), f.line, "required field missing");
                    return;
                };
                CredKind::Jwt(JwtSecret {
                    id,
                    key,
                    algorithm,
                    secret,
                    rsa_public_key,
                    secret_is_base64,
                })
            }
            _ => match f.str("group", errs) {
                Some(g) => CredKind::Acl(g),
                None => {
                    errs.push(&f.path_of("group"), f.line, "required field missing");
                    return;
                }
            },
        };
        self.credentials.push(PendingCredential {
            kind: cred,
            consumer_idx,
            consumer_ref,
        });
    }

    fn certificate(&mut self, node: &Node, path: &str) {
        let Some(f) = Fields::open(
            node,
            path,
            &["id", "cert", "key", "cert_alt", "key_alt", "snis", "tags"],
            &mut self.errs,
        ) else {
            return;
        };
        let errs = &mut self.errs;
        let cert = f.str("cert", errs);
        let key = f.str("key", errs);
        if cert.is_none() {
            errs.push(&f.path_of("cert"), f.line, "required field missing");
        }
        if key.is_none() {
            errs.push(&f.path_of("key"), f.line, "required field missing");
        }
        for k in ["cert_alt", "key_alt"] {
            if f.has(k) {
                errs.push(
                    &f.path_of(k),
                    f.line_of(k),
                    "not supported by this gateway yet",
                );
            }
        }
        if let (Some(c), Some(k)) = (&cert, &key) {
            if let Err(msg) = crate::tls::check_pem_pair(c, k) {
                errs.push(&f.path_of("cert"), f.line_of("cert"), msg);
            }
        }
        let mut snis = Vec::new();
        f.each("snis", errs, |item, p, errs| match &item.value {
            Value::Str(s) => match check_sni(s) {
                Ok(()) => snis.push((s.clone(), p, item.line)),
                Err(msg) => errs.push(&p, item.line, msg),
            },
            Value::Map(_) => {
                if let Some(sf) = Fields::open(item, &p, &["id", "name", "tags"], errs) {
                    if let Some(name) = sf.str("name", errs) {
                        match check_sni(&name) {
                            Ok(()) => snis.push((name, sf.path_of("name"), sf.line_of("name"))),
                            Err(msg) => errs.push(&sf.path_of("name"), sf.line_of("name"), msg),
                        }
                    } else {
                        errs.push(&sf.path_of("name"), sf.line, "required field missing");
                    }
                }
            }
            _ => errs.push(
                &p,
                item.line,
                format!("expected a string or a map, got {}", item.type_name()),
            ),
        });
        check_tags(&f, errs);
        let id = self.id(&f, "certificates", None);
        let cert_idx = self.certificates.len();
        self.certificates.push(Certificate {
            id,
            cert: cert.unwrap_or_default(),
            key: key.unwrap_or_default(),
            snis: Vec::new(),
        });
        for (name, p, line) in snis {
            self.snis.push(PendingSni {
                name,
                cert_ref: Ref {
                    value: format!("#{cert_idx}"),
                    path: p,
                    line,
                },
            });
        }
    }

    fn sni(&mut self, node: &Node, path: &str) {
        let Some(f) = Fields::open(
            node,
            path,
            &["id", "name", "certificate", "tags"],
            &mut self.errs,
        ) else {
            return;
        };
        let errs = &mut self.errs;
        let name = f.str("name", errs);
        let cert = f.str("certificate", errs);
        match (name, cert) {
            (Some(name), Some(cert)) => match check_sni(&name) {
                Ok(()) => self.snis.push(PendingSni {
                    name,
                    cert_ref: Ref {
                        value: cert,
                        path: f.path_of("certificate"),
                        line: f.line_of("certificate"),
                    },
                }),
                Err(msg) => errs.push(&f.path_of("name"), f.line_of("name"), msg),
            },
            (name, cert) => {
                if name.is_none() {
                    errs.push(&f.path_of("name"), f.line, "required field missing");
                }
                if cert.is_none() {
                    errs.push(&f.path_of("certificate"), f.line, "required field missing");
                }
            }
        }
    }

    /// Resolves references, checks uniqueness and assembles the model.
    fn resolve(&mut self, hash: String) -> Config {
        let errs = &mut self.errs;
        // Uniqueness of names and ids.
        let mut service_names: HashMap<String, usize> = HashMap::new();
        let mut service_ids: HashMap<Uuid, usize> = HashMap::new();
        for (i, (s, path, line)) in self.services.iter().enumerate() {
            if let Some(n) = &s.name {
                if service_names.insert(n.clone(), i).is_some() {
                    errs.push(
                        &join(path, "name"),
                        *line,
                        uniqueness("services", "name", n),
                    );
                }
            }
            if service_ids.insert(s.id, i).is_some() && s.name.is_none() {
                errs.push(
                    &join(path, "id"),
                    *line,
                    uniqueness("services", "id", &s.id.to_string()),
                );
            }
        }
        let mut route_names: HashMap<String, usize> = HashMap::new();
        let mut route_ids: HashMap<Uuid, usize> = HashMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(n) = &r.route.name {
                if route_names.insert(n.clone(), i).is_some() {
                    errs.push(
                        &join(&r.path, "name"),
                        r.line,
                        uniqueness("routes", "name", n),
                    );
                }
            }
            if route_ids.insert(r.route.id, i).is_some() && r.route.name.is_none() {
                errs.push(
                    &join(&r.path, "id"),
                    r.line,
                    uniqueness("routes", "id", &r.route.id.to_string()),
                );
            }
        }
        let mut consumer_names: HashMap<String, usize> = HashMap::new();
        let mut consumer_custom: HashMap<String, usize> = HashMap::new();
        let mut consumer_ids: HashMap<Uuid, usize> = HashMap::new();
        for (i, (c, path, line)) in self.consumers.iter().enumerate() {
            if let Some(n) = &c.username {
                if consumer_names.insert(n.clone(), i).is_some() {
                    errs.push(
                        &join(path, "username"),
                        *line,
                        uniqueness("consumers", "username", n),
                    );
                }
            }
            if let Some(n) = &c.custom_id {
                if consumer_custom.insert(n.clone(), i).is_some() {
                    errs.push(
                        &join(path, "custom_id"),
                        *line,
                        uniqueness("consumers", "custom_id", n),
                    );
                }
            }
            consumer_ids.insert(c.id, i);
        }
        let lookup = |r: &Ref, names: &HashMap<String, usize>, ids: &HashMap<Uuid, usize>| {
            names.get(&r.value).copied().or_else(|| {
                Uuid::parse_str(&r.value)
                    .ok()
                    .and_then(|u| ids.get(&u).copied())
            })
        };
        let field_of = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();

        // Routes → services.
        for r in &mut self.routes {
            if let Some(sref) = &r.service_ref {
                match lookup(sref, &service_names, &service_ids) {
                    Some(i) => r.route.service = Some(i),
                    None => errs.push(
                        &sref.path,
                        sref.line,
                        dangling(&field_of(&sref.path), &sref.value, "services"),
                    ),
                }
            } else {
                r.route.service = r.service_idx;
            }
        }
        // Plugins → service / route / consumer.
        let mut seen_plugins: HashMap<(String, PluginScope), ()> = HashMap::new();
        for p in &mut self.plugins {
            if let Some(r) = &p.service {
                match lookup(r, &service_names, &service_ids) {
                    Some(i) => p.plugin.scope.service = Some(i),
                    None => errs.push(&r.path, r.line, dangling("service", &r.value, "services")),
                }
            }
            if let Some(r) = &p.route {
                match lookup(r, &route_names, &route_ids) {
                    Some(i) => p.plugin.scope.route = Some(i),
                    None => errs.push(&r.path, r.line, dangling("route", &r.value, "routes")),
                }
            }
            if let Some(r) = &p.consumer {
                match lookup(r, &consumer_names, &consumer_ids) {
                    Some(i) => p.plugin.scope.consumer = Some(i),
                    None => errs.push(&r.path, r.line, dangling("consumer", &r.value, "consumers")),
                }
            }
            if p.plugin.scope.consumer.is_some() && !p.plugin.config.allows_consumer_scope() {
                errs.push(
                    &join(&p.path, "consumer"),
                    p.line,
                    format!("plugin '{}' cannot be scoped to a consumer", p.plugin.name),
                );
            }
            if let Some(anon) = p.plugin.config.anonymous() {
                let known = consumer_names.contains_key(anon)
                    || Uuid::parse_str(anon).is_ok_and(|u| consumer_ids.contains_key(&u));
                if !known {
                    errs.push(
                        &join(&p.path, "config.anonymous"),
                        p.line,
                        format!("anonymous consumer {anon} is configured but doesn't exist"),
                    );
                }
            }
            if seen_plugins
                .insert((p.plugin.name.clone(), p.plugin.scope.clone()), ())
                .is_some()
            {
                errs.push(
                    &join(&p.path, "name"),
                    p.line,
                    uniqueness("plugins", "name", &p.plugin.name),
                );
            }
        }
        // Credentials → consumers.
        let mut consumers: Vec<Consumer> =
            self.consumers.iter().map(|(c, _, _)| c.clone()).collect();
        let mut keys_seen: HashMap<String, ()> = HashMap::new();
        let mut jwt_keys_seen: HashMap<String, ()> = HashMap::new();
        for cred in &self.credentials {
            let idx = match (&cred.consumer_idx, &cred.consumer_ref) {
                (Some(i), _) => Some(*i),
                (None, Some(r)) => {
                    let found = lookup(r, &consumer_names, &consumer_ids);
                    if found.is_none() {
                        errs.push(&r.path, r.line, dangling("consumer", &r.value, "consumers"));
                    }
                    found
                }
                (None, None) => None,
            };
            let Some(consumer) = idx.and_then(|i| consumers.get_mut(i)) else {
                continue;
            };
            match &cred.kind {
                CredKind::KeyAuth(k) => {
                    if keys_seen.insert(k.key.clone(), ()).is_some() {
                        // Never echo the key itself.
                        errs.push("keyauth_credentials", 0, "uniqueness violation: 'keyauth_credentials' entity with key set to '<redacted>' already declared");
                    }
                    consumer.keyauth_credentials.push(k.clone());
                }
                CredKind::Jwt(j) => {
                    if jwt_keys_seen.insert(j.key.clone(), ()).is_some() {
                        errs.push("jwt_secrets", 0, uniqueness("jwt_secrets", "key", &j.key));
                    }
                    consumer.jwt_secrets.push(j.clone());
                }
                CredKind::Acl(g) => consumer.acls.push(g.clone()),
            }
        }
        // SNIs → certificates.
        let mut certificates = self.certificates.clone();
        let cert_ids: HashMap<Uuid, usize> = certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut sni_seen: HashMap<String, ()> = HashMap::new();
        for sni in &self.snis {
            let idx = match sni
                .cert_ref
                .value
                .strip_prefix('#')
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(i) => Some(i),
                None => Uuid::parse_str(&sni.cert_ref.value)
                    .ok()
                    .and_then(|u| cert_ids.get(&u).copied()),
            };
            if sni_seen.insert(sni.name.clone(), ()).is_some() {
                errs.push(
                    &sni.cert_ref.path,
                    sni.cert_ref.line,
                    uniqueness("snis", "name", &sni.name),
                );
            }
            match idx.and_then(|i| certificates.get_mut(i)) {
                Some(c) => c.snis.push(sni.name.clone()),
                None => errs.push(
                    &sni.cert_ref.path,
                    sni.cert_ref.line,
                    dangling("certificate", &sni.cert_ref.value, "certificates"),
                ),
            }
        }
        // Fix up credential-uniqueness errors that had no location: point at the file top.
        for e in &mut errs.list {
            if e.line == 0 {
                e.line = 1;
            }
        }
        Config {
            services: self.services.iter().map(|(s, _, _)| s.clone()).collect(),
            routes: self.routes.iter().map(|r| r.route.clone()).collect(),
            plugins: self.plugins.iter().map(|p| p.plugin.clone()).collect(),
            consumers,
            certificates,
            hash,
        }
    }
}

#[derive(Clone, Copy)]
enum PluginParent {
    None,
    Service(usize),
    Route(usize),
    Consumer(usize),
}

/// The elements of an array field with their paths.
fn items<'a>(f: &Fields<'a>, key: &str, errs: &mut Errors) -> Vec<(&'a Node, String)> {
    let mut out = Vec::new();
    f.each(key, errs, |node, path, _| out.push((node, path)));
    out
}

fn uniqueness(entity: &str, field: &str, value: &str) -> String {
    format!(
        "uniqueness violation: '{entity}' entity with {field} set to '{value}' already declared"
    )
}

fn dangling(field: &str, value: &str, entity: &str) -> String {
    format!("invalid reference '{field}: {value}' (no such entry in '{entity}')")
}

fn check_tags(f: &Fields<'_>, errs: &mut Errors) {
    f.str_list("tags", errs);
}

fn check_name(name: &str, path: &str, line: usize, errs: &mut Errors) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    if !ok {
        errs.push(
            path,
            line,
            "invalid value: must only contain alphanumeric and '., -, _, ~' characters",
        );
    }
}

fn parse_scheme(s: &str) -> Result<UpstreamScheme, String> {
    match s {
        "http" => Ok(UpstreamScheme::Http),
        "https" => Ok(UpstreamScheme::Https),
        "grpc" | "grpcs" | "tcp" | "tls" | "tls_passthrough" | "udp" | "ws" | "wss" => Err(
            format!("protocol '{s}' is not supported by this gateway yet"),
        ),
        _ => Err(
            "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp".to_string(),
        ),
    }
}

/// Splits a service `url` into scheme, host, port and optional path (Kong §1.4).
fn parse_url(url: &str) -> Result<(UpstreamScheme, String, u16, Option<String>), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(parse_scheme(&s.to_ascii_lowercase())?), r),
        None => (None, url),
    };
    if rest.contains(['?', '#']) {
        return Err("url must not contain a query string or fragment".to_string());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if authority.contains('@') {
        return Err("url must not contain user information".to_string());
    }
    let (host, port) = split_host_port(authority)?;
    check_host(&host)?;
    let scheme = scheme.unwrap_or(match port {
        Some(443) => UpstreamScheme::Https,
        _ => UpstreamScheme::Http,
    });
    let port = port.unwrap_or(scheme.default_port());
    if let Some(p) = &path {
        check_service_path(p)?;
    }
    Ok((scheme, host, port, path))
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("invalid IPv6 address")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| "invalid port number")?),
            None if after.is_empty() => None,
            None => return Err("invalid url".to_string()),
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            Some(p.parse::<u16>().map_err(|_| "invalid port number")?),
        )),
        None => Ok((authority.to_string(), None)),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".to_string());
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid hostname: {host}"))
    }
}

/// Checks a service path: starts with `/`, no `//`, RFC 3986 characters, valid `%XX`.
fn check_service_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("should start with: /".to_string());
    }
    if p.contains("//") {
        return Err("must not have empty segments".to_string());
    }
    let bytes = p.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let ok = bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err("invalid url-encoded value".to_string());
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if !allowed {
            return Err(format!(
                "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
            ));
        }
        i += 1;
    }
    Ok(())
}

fn route_protocols(f: &Fields<'_>, errs: &mut Errors) -> Protocols {
    if !f.has("protocols") {
        return Protocols {
            http: true,
            https: true,
        };
    }
    let mut p = Protocols {
        http: false,
        https: false,
    };
    for (proto, path, line) in f.str_list("protocols", errs) {
        match proto.as_str() {
            "http" => p.http = true,
            "https" => p.https = true,
            "grpc" | "grpcs" | "tcp" | "tls" | "tls_passthrough" | "udp" | "ws" | "wss" => errs
                .push(
                    &path,
                    line,
                    format!("protocol '{proto}' is not supported by this gateway yet"),
                ),
            _ => errs.push(
                &path,
                line,
                "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp",
            ),
        }
    }
    if !p.http && !p.https {
        errs.push(
            &f.path_of("protocols"),
            f.line_of("protocols"),
            "length must be at least 1",
        );
        p = Protocols {
            http: true,
            https: true,
        };
    }
    p
}

fn route_headers(f: &Fields<'_>, errs: &mut Errors) -> Vec<HeaderCondition> {
    let Some(node) = f.node("headers") else {
        return Vec::new();
    };
    let path = f.path_of("headers");
    let Value::Map(entries) = &node.value else {
        errs.push(
            &path,
            node.line,
            format!("expected a map, got {}", node.type_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let hpath = join(&path, &key.name);
        let name = key.name.to_ascii_lowercase().replace('_', "-");
        if name == "host" {
            errs.push(
                &hpath,
                key.line,
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            );
            continue;
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.push(&hpath, key.line, "invalid header name");
            continue;
        }
        let Value::Seq(vals) = &value.value else {
            errs.push(
                &hpath,
                value.line,
                format!("expected an array, got {}", value.type_name()),
            );
            continue;
        };
        if vals.is_empty() {
            errs.push(&hpath, value.line, "length must be at least 1");
        }
        let mut values = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            let vpath = index(&hpath, i);
            let Value::Str(s) = &v.value else {
                errs.push(
                    &vpath,
                    v.line,
                    format!("expected a string, got {}", v.type_name()),
                );
                continue;
            };
            if let Some(re) = s.strip_prefix("~*") {
                match regex::RegexBuilder::new(&format!("^(?:{re})"))
                    .case_insensitive(true)
                    .build()
                {
                    Ok(r) => values.push(HeaderValue::Regex(r)),
                    Err(e) => errs.push(
                        &vpath,
                        v.line,
                        format!("invalid regex: '{re}' ({})", first_line(&e.to_string())),
                    ),
                }
            } else {
                values.push(HeaderValue::Exact(s.to_lowercase()));
            }
        }
        out.push(HeaderCondition { name, values });
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

/// Parses a route host entry (Kong §1.5): exact, `*.suffix` or `prefix.*`, optional port.
pub fn parse_host_pattern(h: &str) -> Result<HostPattern, String> {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => (
            n,
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port number: {p}"))?,
            ),
        ),
        _ => (h, None),
    };
    let stars = name.matches('*').count();
    let name = if stars == 0 {
        check_host(name).map_err(|_| format!("invalid hostname: {h}"))?;
        HostName::Exact(name.to_string())
    } else if stars > 1 {
        return Err("invalid wildcard: must have at most one wildcard".to_string());
    } else if let Some(rest) = name.strip_prefix("*.") {
        check_host(rest).map_err(|_| format!("invalid hostname: {h}"))?;
        HostName::WildcardPrefix(format!(".{rest}"))
    } else if let Some(rest) = name.strip_suffix(".*") {
        check_host(rest).map_err(|_| format!("invalid hostname: {h}"))?;
        HostName::WildcardSuffix(format!("{rest}."))
    } else {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".to_string());
    };
    Ok(HostPattern { name, port })
}

fn check_sni(s: &str) -> Result<(), String> {
    parse_host_pattern(s).and_then(|p| match p.port {
        Some(_) => Err("must not have a port".to_string()),
        None => Ok(()),
    })
}

/// Parses a route path (format 3.0): `~regex` or a normalised prefix.
pub fn parse_path_pattern(raw: &str) -> Result<PathPattern, String> {
    if let Some(re) = raw.strip_prefix('~') {
        if !re.starts_with('/') {
            return Err("should start with: / (fixed path) or ~/ (regex path)".to_string());
        }
        // ATC accepts `(?<name>…)`; so does the regex crate.
        return match Regex::new(&format!("^(?:{re})")) {
            Ok(regex) => Ok(PathPattern::Regex {
                source: re.to_string(),
                regex,
            }),
            Err(e) => Err(format!(
                "invalid regex: '{re}' ({})",
                first_line(&e.to_string())
            )),
        };
    }
    if !raw.starts_with('/') {
        return Err("should start with: / (fixed path) or ~/ (regex path)".to_string());
    }
    check_service_path(raw)?;
    match normalize_path(raw) {
        Ok(n) if n == raw => Ok(PathPattern::Prefix(raw.to_string())),
        Ok(n) => Err(format!("non-normalized path, consider use '{n}' instead")),
        Err(_) => Err("invalid url-encoded value".to_string()),
    }
}

/// Migrates a 1.1/2.1 route path as Kong's loader does: a plain path is normalised,
/// anything else becomes a `~` regex with its percent-escapes decoded (and
/// regex-escaped when they decode to a regex metacharacter).
pub fn migrate_legacy_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-~/%".contains(&b));
    if plain {
        return normalize_path(path).unwrap_or_else(|_| path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = String::from("~");
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                let c = v as char;
                if v.is_ascii() {
                    if "\\^$.|?*+()[]{}".contains(c) {
                        out.push('\\');
                    }
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        let len = match bytes[i] {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        out.push_str(&path[i..i + len]);
        i += len;
    }
    out
}
