//! A Kong-compatible edge gateway on Pingora.
//!
//! Operators keep their Kong declarative YAML; this crate reads it ([`config`]),
//! compiles its routes ([`router`]) and plugins ([`plugins`]), and serves traffic
//! through Pingora ([`proxy`], [`server`]) with rustls ([`tls`]). Every response the
//! gateway makes up itself comes from one error type ([`error`]).

pub mod admin;
pub mod certs;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod error;
pub mod plugins;
pub mod proxy;
pub mod router;
pub mod server;
pub mod state;
pub mod sync;
pub mod tls;
