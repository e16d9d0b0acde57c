//! The Prometheus and Loki rule files (no root): promtool's checks and unit
//! tests, the PrometheusRule kept identical to the rule file, runbook links,
//! the kustomize Components, LogQL parsed by Grafana's parser. The rules are
//! evaluated against real data in `observability.rs`.

use std::{collections::BTreeSet, process::Command};

use crate::{
    dashboards::render_component,
    harness::tool_available,
    obs_support::{logql_parse_errors, loki_rules_path, prometheus_rules_path, repo, rule_name, rules},
};

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("prometheus"))
        .output()
        .expect("promtool");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    if !tool_available("promtool", "promtool checks the rule file") {
        return;
    }
    let (ok, out) = promtool(&["check", "rules", "podwatch.rules.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let n = rules(&prometheus_rules_path()).len();
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
    let (ok, out) = promtool(&["test", "rules", "podwatch.rules.test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
}

/// Every alert has a unit test where it fires and one where it must not.
#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let text = std::fs::read_to_string(repo().join("prometheus/podwatch.rules.test.yml")).expect("test file");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("test YAML");
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in doc["tests"].as_sequence().into_iter().flatten() {
        for c in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = c["alertname"].as_str().unwrap_or_default().to_string();
            if c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for (_, r) in rules(&prometheus_rules_path()) {
        if let Some(a) = r["alert"].as_str() {
            assert!(fires.contains(a), "{a}: no unit test where it fires");
            assert!(quiet.contains(a), "{a}: no unit test where it stays quiet");
        }
    }
}

/// Names, severities, annotations and runbook links of both rule files; the
/// security alerts fire on one event and keep firing a while.
#[test]
fn alerts_are_named_labelled_and_linked_to_the_runbook() {
    let runbook = std::fs::read_to_string(repo().join("prometheus/RUNBOOK.md")).expect("RUNBOOK.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_lowercase().replace(' ', "-"))
        .collect();
    for path in [prometheus_rules_path(), loki_rules_path()] {
        let all = rules(&path);
        assert!(all.iter().any(|(_, r)| r["alert"].is_string()), "{} has alerts", path.display());
        for (group, r) in all {
            let Some(name) = r["alert"].as_str() else {
                let rec = r["record"].as_str().expect("a rule is an alert or a record");
                assert!(
                    rec.split(':').count() == 3,
                    "{rec}: recording rule names are level:metric:operations"
                );
                continue;
            };
            let ctx = format!("{}: {name}", path.display());
            assert!(
                name.starts_with("Podwatch") && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{ctx}: CamelCase Podwatch… names"
            );
            let sev = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["critical", "warning", "info"].contains(&sev), "{ctx}: severity {sev:?}");
            for a in ["summary", "description", "runbook_url"] {
                assert!(r["annotations"][a].as_str().is_some_and(|s| !s.trim().is_empty()), "{ctx}: no {a}");
            }
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
            let anchor = url.rsplit_once("prometheus/RUNBOOK.md#").map(|(_, a)| a).unwrap_or_default();
            assert!(
                anchors.contains(anchor),
                "{ctx}: runbook_url {url} names no section of prometheus/RUNBOOK.md"
            );
            if group.ends_with("security") {
                assert_eq!(r["for"].as_str(), Some("0m"), "{ctx}: security alerts fire on the first event");
                assert!(
                    r["keep_firing_for"].as_str().is_some(),
                    "{ctx}: security alerts need keep_firing_for"
                );
                let expr = r["expr"].as_str().unwrap_or_default().trim_end().to_string();
                assert!(expr.ends_with("> 0"), "{ctx}: security alerts fire on a single event (> 0)");
                assert!(
                    expr.contains("namespace") && expr.contains("workload"),
                    "{ctx}: aggregated by namespace and workload"
                );
            }
        }
    }
}

/// One source of truth: the PrometheusRule is generated from the rule file.
#[test]
fn prometheusrule_is_the_rule_file() {
    let dir = repo().join("prometheus");
    let out = Command::new("bash").arg(dir.join("generate.sh")).arg("--stdout").output().expect("bash");
    assert!(out.status.success(), "generate.sh: {}", String::from_utf8_lossy(&out.stderr));
    let committed =
        std::fs::read_to_string(dir.join("podwatch.prometheusrule.yaml")).expect("PrometheusRule");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "prometheus/podwatch.prometheusrule.yaml is stale: run prometheus/generate.sh"
    );
    let pr: serde_yaml::Value = serde_yaml::from_str(&committed).expect("PrometheusRule YAML");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(prometheus_rules_path()).expect("rules"))
            .expect("rules YAML");
    assert_eq!(pr["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(pr["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(pr["spec"]["groups"], file["groups"], "the PrometheusRule's groups are the rule file's");
}

#[test]
fn rule_components_render() {
    if !tool_available("kubectl", "kubectl kustomize renders the Components") {
        return;
    }
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(prometheus_rules_path()).expect("rules"))
            .expect("rules YAML");
    let docs = render_component("prometheus");
    assert_eq!(docs.len(), 1, "one PrometheusRule");
    assert_eq!(docs[0]["kind"], "PrometheusRule");
    assert_eq!(docs[0]["metadata"]["namespace"], "rendered-ns");
    assert_eq!(docs[0]["spec"]["groups"], serde_json::to_value(&file["groups"]).expect("json"));

    let docs = render_component("loki");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "rendered-ns");
    assert!(cm["metadata"]["labels"]["loki_rule"].is_string(), "labelled for the Loki rules sidecar");
    let text = std::fs::read_to_string(loki_rules_path()).expect("loki rules");
    assert_eq!(cm["data"]["podwatch.rules.yml"].as_str(), Some(text.as_str()));
}

#[test]
fn loki_rules_parse_with_grafana_parser() {
    let items: Vec<(String, String)> = rules(&loki_rules_path())
        .into_iter()
        .map(|(_, r)| (rule_name(&r), r["expr"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert!(items.len() >= 7);
    let Some(errors) = logql_parse_errors(&items) else { return };
    assert!(errors.is_empty(), "LogQL that @grafana/lezer-logql rejects:\n{}", errors.join("\n"));
}
