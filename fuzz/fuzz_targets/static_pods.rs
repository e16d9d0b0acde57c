//! The static pod-metadata file (YAML or JSON, list or map shape) → pods →
//! the store enrichment reads.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use podwatch::pods::{static_file, PodStore};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let pods = match static_file::parse(text) {
        Ok(p) => p,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let store = PodStore::new("file");
    let uids: Vec<String> = pods.iter().map(|p| p.uid.clone()).collect();
    let first_container = pods.iter().flat_map(|p| p.containers.first()).map(|c| c.id.clone()).next();
    store.replace_all(pods, Instant::now());
    assert_eq!(store.live_count(), uids.len(), "every pod is in the store");
    for uid in &uids {
        let meta = store.get(uid).expect("a loaded pod resolves");
        if let Some(id) = &first_container {
            let _ = meta.container_name(id);
        }
    }
});
