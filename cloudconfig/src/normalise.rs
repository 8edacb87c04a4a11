//! Key spelling: `reboot-strategy` and `reboot_strategy` are the same key. coreos-cloudinit
//! replaces every `-` in every mapping key with `_` before anything looks at the document.

use crate::yaml::{Node, Value};

pub fn key(name: &str) -> String {
    name.replace('-', "_")
}

/// Normalise every mapping key in the tree, in place.
pub fn tree(node: &mut Node) {
    match &mut node.value {
        Value::Map(entries) => {
            for e in entries {
                if e.key.contains('-') {
                    e.key = key(&e.key);
                }
                tree(&mut e.value);
            }
        }
        Value::Seq(items) => items.iter_mut().for_each(tree),
        Value::Scalar(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphens_become_underscores_at_every_depth() {
        let mut n = crate::yaml::parse(
            "write-files:\n  - path: /a\ncoreos:\n  units:\n    - drop-ins:\n        - name: x\n",
        )
        .unwrap()
        .unwrap();
        tree(&mut n);
        assert!(n.get("write_files").is_some());
        let unit = &n
            .get("coreos")
            .unwrap()
            .value
            .get("units")
            .unwrap()
            .value
            .items()[0];
        assert!(unit.get("drop_ins").is_some());
        // Values are untouched.
        assert_eq!(key("reboot-strategy"), "reboot_strategy");
    }
}
