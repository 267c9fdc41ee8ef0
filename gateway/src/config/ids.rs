//! Entity ids derived the way Kong's declarative loader derives them (§1.3), so the
//! `X-Consumer-ID` and route ids a client sees match a Kong deployment's.

use uuid::Uuid;

/// Kong's root namespace for declarative UUIDv5 ids.
const KONG_ROOT: Uuid = Uuid::from_u128(0xfd02801f_0957_4a15_a55a_c8d9606f30b5);

/// Returns the id Kong gives an entity of DAO `dao` whose unique key is `key`.
///
/// Runs at config load for services, routes (by `name`) and consumers (by
/// `username`). The result is stable across loads and machines.
pub fn derived(dao: &str, key: &str) -> Uuid {
    let namespace = Uuid::new_v5(&KONG_ROOT, dao.as_bytes());
    Uuid::new_v5(&namespace, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_v5_and_scoped_by_dao() {
        let a = derived("consumers", "alice");
        assert_eq!(a, derived("consumers", "alice"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, derived("services", "alice"));
    }
}
