//! Which plugin instances apply to a route, and in what order they run (Kong §7.8).

use std::sync::Arc;

use super::Plugin;
use crate::config::model::{Config, PluginScope};

/// Kong's precedence of one instance's scope for a request on `route`/`service` by
/// `consumer`; `None` when the instance does not apply.
fn rank(
    scope: &PluginScope,
    route: usize,
    service: Option<usize>,
    consumer: Option<usize>,
) -> Option<u8> {
    let r = scope.route.map(|r| r == route);
    let s = scope.service.map(|s| Some(s) == service);
    let c = scope.consumer.map(|c| Some(c) == consumer);
    // Any bound field that does not match rules the instance out.
    if r == Some(false) || s == Some(false) || c == Some(false) {
        return None;
    }
    let (r, s, c) = (r.is_some(), s.is_some(), c.is_some());
    Some(match (r, s, c) {
        (true, true, true) => 7,
        (true, false, true) => 6,
        (false, true, true) => 5,
        (true, true, false) => 4,
        (false, false, true) => 3,
        (true, false, false) => 2,
        (false, true, false) => 1,
        (false, false, false) => 0,
    })
}

/// Returns the plugins that run for route `route_idx` and, once authentication has
/// identified one, `consumer`, ordered by priority (higher first, ties by name).
///
/// Runs when a config is compiled: once per route, and once per (route, consumer)
/// pair that has consumer-scoped plugins. For each plugin name the most specific
/// enabled instance wins: route+service+consumer > route+consumer >
/// service+consumer > route+service > consumer > route > service > global.
pub fn for_route(
    config: &Config,
    route_idx: usize,
    consumer: Option<usize>,
    built: &[Arc<dyn Plugin>],
) -> Vec<Arc<dyn Plugin>> {
    let service_idx = config.routes.get(route_idx).and_then(|r| r.service);
    let mut chosen: Vec<(u8, usize)> = Vec::new();
    for (i, inst) in config.plugins.iter().enumerate() {
        if !inst.enabled {
            continue;
        }
        let Some(rank) = rank(&inst.scope, route_idx, service_idx, consumer) else {
            continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_kong() {
        let scope = |r, s, c| PluginScope {
            route: r,
            service: s,
            consumer: c,
        };
        let order = [
            scope(Some(0), Some(0), Some(0)),
            scope(Some(0), None, Some(0)),
            scope(None, Some(0), Some(0)),
            scope(Some(0), Some(0), None),
            scope(None, None, Some(0)),
            scope(Some(0), None, None),
            scope(None, Some(0), None),
            scope(None, None, None),
        ];
        let ranks: Vec<_> = order
            .iter()
            .map(|s| rank(s, 0, Some(0), Some(0)).unwrap())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] > w[1]), "{ranks:?}");
        // Consumer-scoped instances do not apply before a consumer is known, nor to
        // another consumer; other routes' instances never apply.
        assert_eq!(rank(&scope(None, None, Some(0)), 0, Some(0), None), None);
        assert_eq!(rank(&scope(None, None, Some(0)), 0, Some(0), Some(1)), None);
        assert_eq!(rank(&scope(Some(1), None, None), 0, Some(0), None), None);
    }
}
