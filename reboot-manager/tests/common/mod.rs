//! Shared by the reboot-manager tests.

use keel_coordination::{semaphore_key, EtcdConfig, EtcdStore, Semaphore};

/// Every value the group's semaphore had, oldest first (etcd's revision history).
pub fn holders_history(endpoints: &str, group: Option<&str>) -> Vec<Semaphore> {
    let store =
        EtcdStore::connect(&EtcdConfig::with_endpoints(endpoints), semaphore_key(group)).unwrap();
    store
        .history()
        .unwrap()
        .into_iter()
        .map(|(_, json)| Semaphore::from_json(json.as_bytes()).unwrap())
        .collect()
}
