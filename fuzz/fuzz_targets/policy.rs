//! Policy YAML → documents → validated policies → the set check → kernel
//! trie entries, and the lookups `policy check` and the tests make on them.
//! The first byte picks the kernel's capabilities (BPF LSM or not), the rest
//! is the file.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use podwatch::{
    kernel::loader::SensorStatus,
    policy::{
        self, check_set,
        compile::{compile, lookup},
        coverage, Capabilities,
    },
};
use podwatch_common::policy::REFS;

/// Keys a kernel would look up: exec and file paths (NUL-terminated, as the
/// programs build them) and their reversed forms for the suffix tries.
const PATHS: [&[u8]; 6] =
    [b"/etc/shadow\0", b"/bin/sh\0", b"/tmp/x\0", b"/\0", b"/var/run/secrets/token\0", b"\0"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let caps = Capabilities { bpf_lsm: first & 1 == 1 };
    let set = match policy::parse(text, "fuzz.yaml", caps) {
        Ok(set) => set,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Err(e) = check_set(&set) {
        let _ = e.to_string();
        return;
    }
    for first_rule_id in [1, u16::MAX - 1] {
        let compiled = match compile(&set, first_rule_id) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.len();
                continue;
            }
        };
        let rules: usize = set.iter().map(|p| p.rules.len()).sum();
        assert_eq!(compiled.rules.len(), rules, "every rule gets an id");
        for key in PATHS {
            let mut rev = key[..key.len() - 1].to_vec();
            rev.reverse();
            for (entries, k) in [
                (&compiled.exec_paths, key),
                (&compiled.file_paths, key),
                (&compiled.exec_suffixes, &rev[..]),
                (&compiled.file_suffixes, &rev[..]),
            ] {
                if let Some(set) = lookup(entries, k) {
                    assert_eq!(set.refs.len(), REFS);
                }
            }
        }
        for (_, prefix, _) in &compiled.addrs {
            assert!(prefix.bits as usize <= prefix.data.len() * 8, "prefix longer than its key");
        }
    }
    let sensors = vec![SensorStatus {
        program: "sched_process_exec".into(),
        hook: "tracepoint".into(),
        attached: true,
        available: true,
        error: None,
        load_ms: 0,
        verified_insns: None,
        on_demand: false,
    }];
    for u in coverage::unenforced(&set, &sensors) {
        let _ = u.to_string();
    }
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    for p in &set {
        let _ = p.selector.selects_pod(None);
        let _ = p.selector.selects_pod(Some(("shop", &labels)));
    }
});
