//! `jwt` (priority 1450). Placeholder until the verifier lands: naming the plugin in a
//! config is refused, so no route is ever left open by it.

use async_trait::async_trait;

use super::auth::AuthConfig;
use super::Plugin;
use crate::config::fields::Errors;
use crate::config::yaml::Node;

/// Kong's name for the plugin.
pub const NAME: &str = "jwt";

/// Decoded plugin config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// anonymous, run_on_preflight, realm.
    pub auth: AuthConfig,
}

/// Refuses the plugin for now.
pub fn decode(_node: Option<&Node>, path: &str, errs: &mut Errors) -> Option<Config> {
    errs.push(path, 0, "plugin 'jwt' is not available in this gateway yet");
    None
}

/// The running plugin.
pub struct Jwt {
    _config: Config,
}

impl Jwt {
    /// Builds the plugin from its config.
    pub fn new(config: Config) -> Self {
        Jwt { _config: config }
    }
}

#[async_trait]
impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn priority(&self) -> i32 {
        1450
    }
}
