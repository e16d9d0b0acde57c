//! Policy documents: what loads, what is refused and how the refusal reads.

use super::*;
use crate::policy::compile::{compile, lookup};

const CAPS: Capabilities = Capabilities { bpf_lsm: false };

fn doc(spec: &str) -> String {
    format!("apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: p1\nspec:\n{spec}")
}

fn err(text: &str) -> PolicyError {
    match parse(text, "test.yaml", CAPS) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

const GOOD: &str = "  selector: {namespaces: [shop]}\n  rules:\n  - name: r1\n    action: kill\n    file: {exact: [/etc/shadow], operations: [read]}\n";

#[test]
fn a_good_policy_loads() {
    let p = parse(&doc(GOOD), "test.yaml", CAPS).expect("valid");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].name, "p1");
    assert_eq!(p[0].rules[0].action, Action::Kill);
    assert_eq!(p[0].source, "test.yaml");
}

#[test]
fn several_documents_per_file() {
    let two = format!("{}---\n{}", doc(GOOD), doc(GOOD).replace("name: p1", "name: p2"));
    assert_eq!(parse(&two, "t.yaml", CAPS).expect("valid").len(), 2);
}

/// Each broken document is refused with the file, a line and the field named.
#[test]
fn broken_policies_give_precise_errors() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad YAML", doc("  selector: {namespaces: [shop]\n  rules: [\n"), "did not find expected"),
        ("unknown field", doc(&GOOD.replace("selector:", "selektor:")), "unknown field `selektor`"),
        ("bad CIDR", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: deny\n    network: {cidrs: [10.0.0.0/33]}\n"), "prefix must be 0..=32"),
        ("CIDR garbage", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    network: {cidrs: [ten.0.0.0/8]}\n"), "is not a CIDR"),
        ("empty selector", doc(&GOOD.replace("{namespaces: [shop]}", "{}")), "empty selector selects nothing"),
        ("unknown action", doc(&GOOD.replace("action: kill", "action: explode")), "unknown variant `explode`"),
        ("deny the kernel cannot do", doc(&GOOD.replace("action: kill", "action: deny")), "needs BPF LSM"),
        ("kill on network", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: kill\n    network: {ports: [443]}\n"), "kill is not available for network"),
        ("duplicate rule names", doc(&format!("{GOOD}  - name: r1\n    action: log\n    exec: {{suffix: [/sh]}}\n")), "used twice"),
        ("relative path", doc(&GOOD.replace("/etc/shadow", "etc/shadow")), "is not absolute"),
        ("no matcher", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n"), "give one of exec, file, network, privileges"),
        ("unknown capability", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: kill\n    privileges: {capabilitiesGained: [CAP_TELEPORT]}\n"), "\"CAP_TELEPORT\" is not a Linux capability"),
        ("unknown namespace", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    privileges: {hostNamespacesEntered: [time]}\n"), "unknown variant `time`"),
        ("empty privileges", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    privileges: {}\n"), "give at least one of changes"),
        ("deny on privileges", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: deny\n    privileges: {uidBecomes: [0]}\n"), "use kill"),
        ("uid -1", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    privileges: {uidBecomes: [4294967295]}\n"), "is not a uid"),
        ("five uids", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    privileges: {uidBecomes: [0, 1, 2, 3, 4]}\n"), "at most 4 uids"),
        ("two matchers", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    exec: {suffix: [/sh]}\n    file: {exact: [/x]}\n"), "only one of exec, file, network, privileges"),
        ("unknown operation", doc(&GOOD.replace("operations: [read]", "operations: [nibble]")), "unknown variant `nibble`"),
        ("port zero", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    network: {ports: [0]}\n"), "0 is not a port"),
        ("port too big", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    network: {ports: [70000]}\n"), "70000"),
        ("wrong apiVersion", doc(GOOD).replace("v1alpha1", "v9"), "apiVersion"),
        ("wrong kind", doc(GOOD).replace("kind: Policy", "kind: TracingPolicy"), "kind"),
        ("bad name", doc(GOOD).replace("name: p1", "name: Bad_Name"), "metadata.name"),
        ("no rules", doc("  selector: {allPods: true}\n  rules: []\n"), "spec.rules is empty"),
        ("empty matcher", doc("  selector: {allPods: true}\n  rules:\n  - name: r\n    action: log\n    exec: {}\n"), "at least one of exact"),
    ];
    for (what, text, want) in cases {
        let e = err(&text);
        let shown = e.to_string();
        assert!(shown.starts_with("test.yaml:"), "{what}: no file:line in {shown:?}");
        assert!(e.line.is_some(), "{what}: no line in {shown:?}");
        assert!(shown.contains(want), "{what}: {shown:?} does not say {want:?}");
    }
}

#[test]
fn the_line_points_at_the_problem() {
    let text = doc(&GOOD.replace("action: kill", "action: explode"));
    let e = err(&text);
    let line = e.line.expect("line");
    let shown = text.lines().nth(line - 1).unwrap_or_default();
    assert!(shown.contains("explode") || shown.contains("action"), "line {line} is {shown:?}");
}

/// A file with no document (one caught half-written, truncated before it is
/// filled) is refused, so the running set stays; an empty directory is an
/// explicit "no policies".
#[test]
fn a_file_without_documents_is_refused_an_empty_directory_is_not() {
    let dir = tempfile::tempdir().expect("tmp");
    assert_eq!(load_dir(dir.path(), CAPS).expect("empty directory").len(), 0);
    for text in ["", "# only a comment\n", "---\n"] {
        std::fs::write(dir.path().join("p.yaml"), text).expect("write");
        let e = load_dir(dir.path(), CAPS).expect_err("no documents");
        assert!(e.to_string().contains("p.yaml") && e.to_string().contains("no policy document"), "{e}");
    }
}

#[test]
fn duplicate_policy_names_across_files_name_both() {
    let a = parse(&doc(GOOD), "a.yaml", CAPS).expect("a");
    let b = parse(&doc(GOOD), "b.yaml", CAPS).expect("b");
    let all: Vec<Policy> = a.into_iter().chain(b).collect();
    let e = check_set(&all).expect_err("duplicate");
    assert!(e.to_string().contains("a.yaml") && e.to_string().contains("b.yaml"), "{e}");
}

#[test]
fn deny_on_files_and_execs_needs_bpf_lsm() {
    let deny = doc(&GOOD.replace("action: kill", "action: deny"));
    let p = parse(&deny, "t.yaml", Capabilities { bpf_lsm: true }).expect("BPF LSM: deny loads");
    assert_eq!(p[0].rules[0].action, Action::Deny);
    let e = parse(&deny, "t.yaml", Capabilities { bpf_lsm: false }).expect_err("no BPF LSM");
    assert!(e.to_string().contains("needs BPF LSM"), "{e}");
}

#[test]
fn selectors() {
    let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    let s = Selector { namespaces: vec!["shop".into()], ..Default::default() };
    assert!(s.selects_pod(Some(("shop", &labels))));
    assert!(!s.selects_pod(Some(("other", &labels))));
    assert!(!s.selects_pod(None), "unknown pods are picked only by allPods");
    let s = Selector { pod_labels: labels.clone(), ..Default::default() };
    assert!(s.selects_pod(Some(("any", &labels))));
    assert!(!s.selects_pod(Some(("any", &Default::default()))));
    assert!(Selector { all_pods: true, ..Default::default() }.selects_pod(None));
}

#[test]
fn compiled_tries_carry_every_applicable_rule() {
    let text = doc("  selector: {allPods: true}\n  rules:\n  - name: etc\n    action: log\n    file: {prefix: [/etc/]}\n  - name: ssh\n    action: kill\n    file: {directory: [/etc/ssh]}\n  - name: keys\n    action: log\n    file: {suffix: [.key]}\n");
    let p = parse(&text, "t.yaml", CAPS).expect("valid");
    let c = compile(&p, 10).expect("compile");
    let rules = |key: &[u8]| -> Vec<u16> {
        lookup(&c.file_paths, key)
            .map(|s| s.refs.iter().filter(|r| r.rule != 0).map(|r| r.rule).collect())
            .unwrap_or_default()
    };
    assert_eq!(rules(b"/etc/passwd\0"), vec![10]);
    assert_eq!(rules(b"/etc/ssh/sshd_config\0"), vec![10, 11], "the /etc/ prefix rides along in /etc/ssh/");
    assert_eq!(rules(b"/etc/ssh\0"), vec![10, 11], "directory matches itself");
    assert_eq!(rules(b"/etcetera\0"), Vec::<u16>::new());
    let rev: Vec<u8> = b"/srv/tls/server.key".iter().rev().copied().collect();
    assert_eq!(lookup(&c.file_suffixes, &rev).map(|s| s.refs[0].rule), Some(12));
    assert_eq!(c.rules.iter().map(|r| &*r.rule).collect::<Vec<_>>(), vec!["etc", "ssh", "keys"]);
}

#[test]
fn cidr_excepts_carve_out() {
    let text = doc("  selector: {allPods: true}\n  rules:\n  - name: out\n    action: deny\n    network: {cidrs: [0.0.0.0/0], except: [10.0.0.0/8, 127.0.0.0/8], ports: [443, 80]}\n");
    let p = parse(&text, "t.yaml", CAPS).expect("valid");
    let c = compile(&p, 1).expect("compile");
    let v4: Vec<(Prefix2, Vec<(u16, u16)>)> = c
        .addrs
        .iter()
        .filter(|(v6, _, _)| !v6)
        .map(|(_, p, s)| {
            (Prefix2(p.bits), s.refs.iter().filter(|r| r.rule != 0).map(|r| (r.rule, r.port)).collect())
        })
        .collect();
    // /0 carries the rule for both ports; the excepts carry nothing.
    assert!(v4.contains(&(Prefix2(0), vec![(1, 80), (1, 443)])), "{v4:?}");
    assert!(v4.contains(&(Prefix2(8), vec![])), "{v4:?}");
}

#[derive(Debug, PartialEq)]
struct Prefix2(u32);

#[test]
fn the_builtin_default_and_shipped_examples_load() {
    let p = parse(BUILTIN_DEFAULT, "builtin", CAPS).expect("built-in default");
    assert!(
        p.iter().all(|p| p.rules.iter().all(|r| matches!(r.action, Action::Log | Action::Count))),
        "observe only"
    );
    compile(&p, 1).expect("compiles");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for entry in std::fs::read_dir(&dir).expect("policies/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let p = parse(&text, &path.display().to_string(), CAPS).unwrap_or_else(|e| panic!("{e}"));
        compile(&p, 1).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn privilege_rules_compile_to_kernel_masks() {
    use podwatch_common::{change, ns};
    let text = doc("  selector: {allPods: true}\n  rules:\n  - name: r1\n    action: kill\n    privileges:\n      capabilitiesGained: [CAP_SYS_ADMIN, net_admin]\n      hostNamespacesEntered: [net, mnt]\n  - name: r2\n    action: log\n    privileges: {uidBecomes: [0], changes: [setuid, exec]}\n");
    let p = parse(&text, "t.yaml", CAPS).expect("valid");
    let c = compile(&p, 7).expect("compiles");
    assert_eq!(c.privileges.len(), 2);
    let (a, b) = (c.privileges[0], c.privileges[1]);
    assert_eq!((a.rule, a.action, a.policy), (7, podwatch_common::action::KILL, 0));
    assert_eq!(a.caps_gained, (1 << 21) | (1 << 12));
    assert_eq!(a.ns_host_entered, (1 << ns::NET) | (1 << ns::MNT));
    assert_eq!((a.has_uids, a.changes, a.caps_held), (0, 0, 0));
    assert_eq!((b.rule, b.has_uids, b.uids), (8, 1, [0, u32::MAX, u32::MAX, u32::MAX]));
    assert_eq!(b.changes, (1 << change::SETUID) | (1 << change::EXEC));
    // The kernel holds 16 per set.
    let many: String = (0..17)
        .map(|i| format!("  - {{name: r{i}, action: log, privileges: {{uidBecomes: [0]}}}}\n"))
        .collect();
    let p = parse(&doc(&format!("  selector: {{allPods: true}}\n  rules:\n{many}")), "t.yaml", CAPS)
        .expect("valid");
    assert!(compile(&p, 1).unwrap_err().contains("at most 16"));
}
