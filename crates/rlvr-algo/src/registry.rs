//! A tiny name -> implementation registry, shared by advantage estimators and policy losses, so a
//! user binary can add its own by name before training starts.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub(crate) struct Registry<T: ?Sized> {
    kind: &'static str,
    items: RwLock<BTreeMap<String, Arc<T>>>,
}

impl<T: ?Sized> Registry<T> {
    pub(crate) fn new(kind: &'static str, builtins: Vec<(&str, Arc<T>)>) -> Self {
        let items = builtins
            .into_iter()
            .map(|(name, item)| (name.to_string(), item))
            .collect();
        Registry {
            kind,
            items: RwLock::new(items),
        }
    }

    /// Adds (or replaces) `name`.
    pub(crate) fn register(&self, name: &str, item: Arc<T>) {
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        items.insert(name.to_string(), item);
    }

    pub(crate) fn get(&self, name: &str) -> crate::Result<Arc<T>> {
        let items = self.items.read().unwrap_or_else(|e| e.into_inner());
        items.get(name).cloned().ok_or_else(|| {
            crate::Error::invalid(format!(
                "Unknown {} '{name}'. Available: [{}]",
                self.kind,
                items
                    .keys()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        let items = self.items.read().unwrap_or_else(|e| e.into_inner());
        items.contains_key(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let items = self.items.read().unwrap_or_else(|e| e.into_inner());
        items.keys().cloned().collect()
    }
}
