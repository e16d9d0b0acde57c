//! The shipped Grafana dashboards' structure (no root, no data needed):
//! importable through the UI and through the sidecar as they are. Their
//! queries are run against real data in `observability.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::tool_available;
use crate::obs_support::{dashboard_dir, dashboards, logql_parse_errors, panel_queries, repo, substitute};

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

/// Every datasource reference in the dashboard (panels, targets, variables).
fn datasource_refs(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if k == "datasource" {
                    out.push((p.clone(), x.clone()));
                }
                datasource_refs(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasource_refs(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn dashboards_are_well_formed() {
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        let mut bad = |what: String| problems.push(format!("{file}: {what}"));
        if d.get("__inputs").is_some() || d.get("__requires").is_some() {
            bad("has __inputs/__requires (never substituted by sidecar provisioning)".into());
        }
        // Grafana 10.4's schema version, the documented minimum.
        if d["schemaVersion"] != 39 {
            bad(format!("schemaVersion {} (README says 39, Grafana 10.4)", d["schemaVersion"]));
        }
        if d["id"].is_number() {
            bad("has a numeric id from someone's Grafana".into());
        }
        match d["uid"].as_str() {
            Some(u) if u.starts_with("podwatch-") && uids.insert(u.to_string()) => {}
            other => bad(format!("uid {other:?} missing, not podwatch-*, or duplicated")),
        }
        // Links to the other dashboards, carrying time range and variables.
        let links = d["links"].as_array().cloned().unwrap_or_default();
        if !links
            .iter()
            .any(|l| l["type"] == "dashboards" && l["includeVars"] == true && l["keepTime"] == true)
        {
            bad("no dashboard links carrying variables and time".into());
        }
        if !d["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == "podwatch")) {
            bad("not tagged podwatch (the links find dashboards by tag)".into());
        }

        // Panels: ids unique, titled, described, with a unit, gridPos not overlapping.
        let mut ids = BTreeSet::new();
        let mut cells: BTreeMap<(i64, i64), String> = BTreeMap::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            if title.trim().is_empty() || title == "Panel Title" {
                bad(format!("panel {} has title {title:?}", p["id"]));
            }
            if !p["id"].as_i64().is_some_and(|id| ids.insert(id)) {
                bad(format!("panel {title:?}: id {} missing or duplicated", p["id"]));
            }
            if p["description"].as_str().is_none_or(|s| s.trim().is_empty()) {
                bad(format!("panel {title:?} has no description"));
            }
            if p["fieldConfig"]["defaults"]["unit"].as_str().is_none_or(|s| s.is_empty()) {
                bad(format!("panel {title:?} has no unit"));
            }
            if p["type"] == "row" {
                bad(format!("panel {title:?} is a row (keep the layout flat)"));
            }
            let g = &p["gridPos"];
            let (Some(x), Some(y), Some(w), Some(h)) =
                (g["x"].as_i64(), g["y"].as_i64(), g["w"].as_i64(), g["h"].as_i64())
            else {
                bad(format!("panel {title:?} has no complete gridPos"));
                continue;
            };
            if x < 0 || w <= 0 || h <= 0 || x + w > 24 {
                bad(format!("panel {title:?} gridPos {g} outside the 24-column grid"));
            }
            let mut overlaps = BTreeSet::new();
            for cx in x..x + w {
                for cy in y..y + h {
                    if let Some(other) = cells.insert((cx, cy), title.clone()) {
                        overlaps.insert(other);
                    }
                }
            }
            for other in overlaps {
                bad(format!("panels {other:?} and {title:?} overlap"));
            }
            if p["targets"].as_array().is_none_or(|t| t.is_empty()) {
                bad(format!("panel {title:?} has no query"));
            }
        }

        // Datasources only through the two variables.
        let mut refs = Vec::new();
        datasource_refs(&d, "", &mut refs);
        for (path, r) in &refs {
            let ok = matches!(
                (r["type"].as_str(), r["uid"].as_str()),
                (Some("prometheus"), Some("${datasource}")) | (Some("loki"), Some("${loki_datasource}"))
            );
            if !ok && !path.starts_with(".templating") {
                bad(format!("{path} = {r}: datasources only through ${{datasource}} / ${{loki_datasource}}"));
            }
        }
        let vars = d["templating"]["list"].as_array().cloned().unwrap_or_default();
        for v in &vars {
            let name = v["name"].as_str().unwrap_or_default();
            if v["type"] == "datasource" {
                let want = match name {
                    "datasource" => "prometheus",
                    "loki_datasource" => "loki",
                    _ => "",
                };
                if v["query"] != want {
                    bad(format!("datasource variable {name} of type {}", v["query"]));
                }
                if v["current"].as_object().is_some_and(|c| !c.is_empty()) {
                    bad(format!("variable {name} has a saved value from someone's Grafana"));
                }
            } else if v["type"] == "query" {
                if v["datasource"]["uid"] != "${datasource}" {
                    bad(format!("variable {name} queries {} (not ${{datasource}})", v["datasource"]));
                }
                if v["current"].as_object().is_some_and(|c| !c.is_empty()) {
                    bad(format!("variable {name} has a saved value"));
                }
            }
        }
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        for want in ["datasource", "loki_datasource", "cluster", "node", "namespace", "workload", "pod"] {
            if !names.contains(&want) {
                bad(format!("no `{want}` variable"));
            }
        }
        // Every variable used: in a panel (queries, datasources) or by another variable.
        let panels_text = serde_json::to_string(&d["panels"]).expect("json");
        for name in &names {
            let used_by_var = vars.iter().any(|v| {
                v["name"] != *name
                    && serde_json::to_string(&v["query"]).expect("json").contains(&format!("${name}"))
            });
            if !panels_text.contains(&format!("${name}"))
                && !panels_text.contains(&format!("${{{name}}}"))
                && !used_by_var
            {
                bad(format!("variable `{name}` is never used"));
            }
        }
    }
    assert!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));
}

/// The selectors the issue asks for: every pod-level query filters on every
/// pod variable, every Prometheus query on cluster and node, rates and
/// increases over Grafana's intervals only, LogQL ranges over $__auto.
#[test]
fn every_query_uses_the_variables_and_grafana_intervals() {
    let mut problems = Vec::new();
    let pod_families = [
        "podwatch_exec_total",
        "podwatch_process_exits_total",
        "podwatch_file_access_total",
        "podwatch_network_connections_total",
        "podwatch_network_datagrams_total",
        "podwatch_network_sent_bytes_total",
        "podwatch_network_received_bytes_total",
        "podwatch_privilege_changes_total",
        "podwatch_enforcement_actions_total",
    ];
    for q in panel_queries() {
        let e = &q.expr;
        let has = |v: &str| e.contains(&format!("=~\"${v}\""));
        if !(has("cluster") && has("node")) {
            problems.push(format!("{q}: does not filter on $cluster and $node"));
        }
        let pod_level = q.loki || pod_families.iter().any(|f| e.contains(f));
        if pod_level && !(has("namespace") && has("workload") && has("pod")) {
            problems.push(format!("{q}: pod-level query without $namespace, $workload and $pod"));
        }
        // Every range selector is one of Grafana's intervals.
        for part in e.split('[').skip(1) {
            let window = part.split(']').next().unwrap_or_default().trim();
            let ok = if q.loki {
                window == "$__auto"
            } else {
                window == "$__rate_interval" || window == "$__range"
            };
            if !ok {
                problems.push(format!(
                    "{q}: range [{window}] (use $__rate_interval / $__range, or $__auto in LogQL)"
                ));
            }
        }
        // A counter is never shown raw: rate(), increase(), or the
        // "new series at full value" form (X * 1 unless X offset W).
        if !q.loki {
            for (i, name) in e.match_indices("_total") {
                let start =
                    e[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |j| j + 1);
                let family = &e[start..i + name.len()];
                let before = e[..start].trim_end();
                let after = &e[i + name.len()..];
                let after_sel =
                    after.strip_prefix('{').and_then(|a| a.find('}').map(|j| &a[j + 1..])).unwrap_or(after);
                let ok = before.ends_with("rate(")
                    || before.ends_with("increase(")
                    || (before.ends_with("((") && after_sel.starts_with(" * 1 unless"))
                    || (before.ends_with("unless") && after_sel.starts_with(" offset"));
                if !ok {
                    problems.push(format!("{q}: raw counter {family}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "query problems:\n{}", problems.join("\n"));
}

/// Every LogQL of the dashboards parses with Grafana's own parser once the
/// variables are substituted as Grafana does.
#[test]
fn dashboard_logql_parses_with_grafana_parser() {
    let vars: BTreeMap<String, String> = [
        ("cluster", ".*"),
        ("node", "node-a"),
        ("namespace", "(shop|xwing)"),
        ("workload", ".*"),
        ("pod", ".*"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let items: Vec<(String, String)> = panel_queries()
        .into_iter()
        .filter(|q| q.loki)
        .map(|q| (format!("{} / {}", q.dashboard, q.panel), substitute(&q.expr, &vars)))
        .collect();
    assert!(items.len() >= 8, "the dashboards have Loki panels");
    let Some(errors) = logql_parse_errors(&items) else { return };
    assert!(errors.is_empty(), "LogQL that @grafana/lezer-logql rejects:\n{}", errors.join("\n"));
}

/// The committed JSON and README are what generate.py writes.
#[test]
fn dashboards_are_generated_from_generate_py() {
    if !tool_available("python3", "the dashboards are generated by a Python script") {
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(dashboard_dir().join("generate.py"))
        .arg("--check")
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The README lists every panel of every dashboard, one line each.
    let readme = std::fs::read_to_string(dashboard_dir().join("README.md")).expect("README");
    for (file, d) in dashboards() {
        for p in panels(&d) {
            let line = format!("- **{}**", p["title"].as_str().unwrap_or_default());
            assert!(readme.contains(&line), "README.md lacks {file} panel line {line}");
        }
    }
    assert!(readme.contains("Minimum Grafana version: 10.4"));
}

/// The kustomize Component renders a ConfigMap with every dashboard,
/// labelled for Grafana's sidecar, without a namespace of its own.
#[test]
fn dashboards_component_renders_the_sidecar_configmap() {
    if !tool_available("kubectl", "kubectl kustomize renders the Components") {
        return;
    }
    let docs = render_component("dashboards/grafana");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "rendered-ns", "the overlay's namespace, none of its own");
    for (file, d) in dashboards() {
        let text = cm["data"][&file].as_str().unwrap_or_else(|| panic!("{file} not in the ConfigMap"));
        let parsed: Value = serde_json::from_str(text).expect("dashboard JSON in the ConfigMap");
        assert_eq!(parsed, d, "{file} in the ConfigMap is the file");
    }
}

/// Renders a Component from an overlay under the target dir (kustomize wants
/// relative paths), with namespace `rendered-ns`: the YAML documents.
pub fn render_component(component: &str) -> Vec<Value> {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kustomize-{}", component.replace('/', "-")));
    std::fs::create_dir_all(&base).expect("mkdir");
    let rel = pathdiff(&repo().join(component), &base);
    std::fs::write(
        base.join("kustomization.yaml"),
        format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: rendered-ns\ncomponents:\n- {rel}\n"),
    )
    .expect("write kustomization");
    let out = std::process::Command::new("kubectl").arg("kustomize").arg(&base).output().expect("kubectl");
    assert!(out.status.success(), "kubectl kustomize {component}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
        docs.push(serde_json::to_value(&v).expect("YAML as JSON"));
    }
    docs
}

/// `to` relative to `from` (both absolute, canonicalised).
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> String {
    let to = to.canonicalize().expect("canonical");
    let from = from.canonicalize().expect("canonical");
    let common = to.components().zip(from.components()).take_while(|(a, b)| a == b).count();
    let ups = from.components().count() - common;
    let mut parts: Vec<String> = vec!["..".into(); ups];
    parts.extend(to.components().skip(common).map(|c| c.as_os_str().to_string_lossy().to_string()));
    parts.join("/")
}
