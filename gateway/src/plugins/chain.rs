//! Which plugin instances apply to a route, and in what order they run (Kong §7.8).

use std::sync::Arc;

use super::Plugin;
use crate::config::model::Config;

/// Returns the plugins that run for route `route_idx`, ordered by priority.
///
/// Runs once per route when a config is compiled. For each plugin name the most
/// specific enabled instance wins: route+service > route > service > global.
/// Consumer-scoped instances are left to the authentication step, which knows the
/// consumer.
pub fn for_route(
    config: &Config,
    route_idx: usize,
    built: &[Arc<dyn Plugin>],
) -> Vec<Arc<dyn Plugin>> {
    let service_idx = config.routes.get(route_idx).and_then(|r| r.service);
    let mut chosen: Vec<(u8, usize)> = Vec::new();
    for (i, inst) in config.plugins.iter().enumerate() {
        if !inst.enabled || inst.scope.consumer.is_some() {
            continue;
        }
        let rank = match (inst.scope.route, inst.scope.service) {
            (Some(r), Some(s)) if r == route_idx && Some(s) == service_idx => 3,
            (Some(r), None) if r == route_idx => 2,
            (None, Some(s)) if Some(s) == service_idx => 1,
            (None, None) => 0,
            _ => continue,
        };
        match chosen
            .iter_mut()
            .find(|(_, j)| config.plugins[*j].name == inst.name)
        {
            Some(slot) if slot.0 < rank => *slot = (rank, i),
            Some(_) => {}
            None => chosen.push((rank, i)),
        }
    }
    let mut plugins: Vec<Arc<dyn Plugin>> = chosen
        .into_iter()
        .filter_map(|(_, i)| built.get(i).cloned())
        .collect();
    plugins.sort_by(|a, b| {
        b.priority()
            .cmp(&a.priority())
            .then_with(|| a.name().cmp(b.name()))
    });
    plugins
}
