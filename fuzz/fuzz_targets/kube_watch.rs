//! Kubernetes API answers: the whole input as a LIST page and as an error
//! body, and line by line as a WATCH stream, each pod into the store as the
//! pod source would put it.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use podwatch::pods::{
    kube::{error_message, parse_list_page, parse_watch_line, pod_meta, WatchLine},
    PodStore,
};

fuzz_target!(|data: &[u8]| {
    let store = PodStore::new("kubernetes");
    let _ = error_message(data);
    if let Ok(page) = parse_list_page(data) {
        let pods: Vec<_> = page.items.iter().filter_map(|p| pod_meta(p).ok()).collect();
        store.replace_all(pods, Instant::now());
        let _ = (page.metadata.resource_version.len(), page.metadata.continue_token.len());
    }
    for line in data.split(|&b| b == b'\n') {
        match parse_watch_line(line) {
            Ok(WatchLine::Pod { deleted, pod }) => {
                if let Ok(meta) = pod_meta(&pod) {
                    let uid = meta.uid.clone();
                    store.upsert(meta);
                    if deleted {
                        store.mark_deleted(&uid, Instant::now());
                    }
                    assert!(store.get(&uid).is_some(), "an applied pod resolves");
                }
            }
            Ok(WatchLine::Blank | WatchLine::Bookmark { .. } | WatchLine::Gone) => {}
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
    }
});
