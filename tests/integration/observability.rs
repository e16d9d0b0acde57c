//! Every query of the shipped dashboards and rule files, run against real
//! data: two real agents ("node-a" shipping events to a real Loki through the
//! Loki sink, "node-b" stressed: tiny ring buffer, a dead OTLP sink, a broken
//! policy reload), a real Prometheus scraping both plus a dead target, and a
//! real process in a fake pod (namespace shop, deployment web, pod web-1) that
//! execs a shell, reads files (one of them killed), connects (one refused, one
//! denied), sends a datagram. Variables are substituted as Grafana does.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    harness::tool_available,
    harness::{
        bash_in, command_in, free_port, http_get, metric_sum, pods_file, require_root, run, urlencode,
        workload, workload_in, Agent, FakePod, Prometheus,
    },
    obs_support::{
        alert_signal, dashboards, logql_parse_errors, loki_rules_path, panel_queries, parse_label_values,
        prometheus_rules_path, regex_format, repo, rule_name, rules, stream_label_names, substitute,
        variable_queries, DashQuery, Loki,
    },
};

const TENANT: &str = "podwatch-e2e";

/// The shipped policies, with the enforcing ones pointed at namespace shop
/// (they ship selecting `default` and `restricted`).
fn policy_dir(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for entry in std::fs::read_dir(repo().join("policies")).expect("policies/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        let mut text = std::fs::read_to_string(&path).expect("read policy");
        if name == "sensitive-files-enforce.yaml" {
            text = text.replace("namespaces: [default]", "namespaces: [shop]");
        }
        if name == "egress-outside-cluster.yaml" {
            text = text.replace("namespaces: [restricted]", "namespaces: [shop]");
        }
        if name == "privilege-escalation.yaml" {
            text = text.replace("namespaces: [default]", "namespaces: [shop]");
        }
        std::fs::write(dir.join(name), text).expect("write policy");
    }
}

/// Accepts and drains connections until the test ends.
fn listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        }
    });
    port
}

/// Polls `check` until it returns Ok or the deadline passes; the last error.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Runs every query of `queries` until each returns data; the ones that
/// never did, named by dashboard, panel and expression.
fn run_until_data(
    prom: &Prometheus,
    loki: &Loki,
    queries: &[(String, String, bool)],
    timeout: Duration,
) -> (BTreeMap<String, Vec<Value>>, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut results = BTreeMap::new();
    let mut pending: Vec<&(String, String, bool)> = queries.iter().collect();
    let mut last_err: BTreeMap<String, String> = BTreeMap::new();
    loop {
        pending.retain(|(name, expr, is_loki)| {
            let r = if *is_loki {
                loki.query_range(expr, Duration::from_secs(600))
            } else {
                prom.query_result(expr)
            };
            match r {
                Ok(rows) if !rows.is_empty() => {
                    results.insert(name.clone(), rows);
                    false
                }
                Ok(_) => {
                    last_err.insert(name.clone(), "no data".into());
                    true
                }
                Err(e) => {
                    last_err.insert(name.clone(), e);
                    true
                }
            }
        });
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let failures = pending
        .iter()
        .map(|(name, expr, _)| format!("{name}\n    {expr}\n    → {}", last_err[name]))
        .collect();
    (results, failures)
}

/// All log lines of a Loki streams result.
fn lines(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v[1].as_str().map(str::to_string))
        .collect()
}

#[test]
fn dashboards_and_rules_answer_from_real_agents_prometheus_and_loki() {
    require_root!();
    if !tool_available("prometheus", "the queries run against a real Prometheus")
        || !tool_available("unshare", "the denied connect runs in an empty network namespace")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let loki_rules = std::fs::read_to_string(loki_rules_path()).expect("loki rules");
    let Some(loki) = Loki::start(
        TENANT,
        &[("podwatch.rules.yml", &loki_rules)],
        Some(&format!("http://{prom_addr}/api/v1/write")),
    ) else {
        return;
    };

    let web = FakePod::systemd("burstable");
    let pods = pods_file(dir.path(), &[(&web, "shop", "web-1", Some(("Deployment", "web")))]);
    let (pol_a, pol_b) = (dir.path().join("policies-a"), dir.path().join("policies-b"));
    policy_dir(&pol_a);
    policy_dir(&pol_b);
    let cfg_a = dir.path().join("a.yaml");
    std::fs::write(
        &cfg_a,
        format!(
            "node_name: node-a\nsinks:\n  loki:\n    url: http://{}\n    tenant: {TENANT}\n    labels: {{cluster: e2e}}\n    queue: {{linger_ms: 200}}\n",
            loki.addr
        ),
    )
    .expect("write a.yaml");
    let cfg_b = dir.path().join("b.yaml");
    std::fs::write(
        &cfg_b,
        format!(
            "node_name: node-b\nsinks:\n  otlp:\n    endpoint: http://127.0.0.1:{}\n    protocol: http\n    queue: {{capacity: 16}}\n",
            free_port()
        ),
    )
    .expect("write b.yaml");
    let s = |p: &Path| p.display().to_string();
    let a = Agent::start_with(&[
        "--config",
        &s(&cfg_a),
        "--events",
        "matched",
        "--policy-dir",
        &s(&pol_a),
        "--metadata-file",
        &pods,
    ]);
    let b = Agent::start_with(&[
        "--config",
        &s(&cfg_b),
        "--events",
        "all",
        "--ring-buffer-bytes",
        "4096",
        "--policy-dir",
        &s(&pol_b),
        "--metadata-file",
        &pods,
        "--output",
        "none",
    ]);
    let prom = Prometheus::start_at(
        &prom_addr,
        &format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
rule_files: ['{}']
scrape_configs:
- job_name: podwatch
  static_configs:
  - {{targets: ['{}'], labels: {{cluster: e2e, node: node-a}}}}
  - {{targets: ['{}'], labels: {{cluster: e2e, node: node-b}}}}
  - {{targets: ['127.0.0.1:{}'], labels: {{cluster: e2e, node: node-down}}}}
",
            prometheus_rules_path().display(),
            a.addr,
            b.addr,
            free_port()
        ),
        &["--web.enable-remote-write-receiver"],
    );

    // node-b rejects a policy change (the previous set stays in force).
    std::fs::write(pol_b.join("broken.yaml"), "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nspec: [")
        .expect("write");
    eventually("node-b counts the rejected reload", Duration::from_secs(30), || {
        let (_, m) = http_get(&b.addr, "/metrics").map_err(|e| e.to_string())?;
        match metric_sum(&m, "podwatch_policy_reloads_total", &[("result", "error")]) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("reload errors {other:?}")),
        }
    });

    // The pod's activity.
    let ssh = dir.path().join("home/.ssh");
    std::fs::create_dir_all(&ssh).expect("mkdir");
    std::fs::write(ssh.join("id_rsa"), "not a key\n").expect("write key");
    let (open_port, closed_port) = (listener(), free_port());
    let net = format!(
        "import socket\n\
         socket.create_connection(('127.0.0.1', {open_port})).close()\n\
         try:\n    socket.create_connection(('127.0.0.1', {closed_port}))\n    raise SystemExit(5)\n\
         except ConnectionRefusedError:\n    pass\n\
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {closed_port}))\n"
    );
    let script = format!(
        "cat /etc/passwd >/dev/null && ! cat /nonexistent-podwatch-e2e 2>/dev/null && cat {} >/dev/null && /usr/bin/python3 -c \"{net}\"",
        ssh.join("id_rsa").display()
    );
    let (_, status) = bash_in(Some(&web.cgroup), &script);
    assert!(status.success(), "the pod's shell activity: {status:?}");
    let (_, status) = run(command_in(Some(&web.cgroup), "/bin/cat", &["/etc/shadow"]));
    assert_eq!(status.signal(), Some(9), "sensitive-files-enforce kills the reader of /etc/shadow in shop");
    // Egress outside the cluster, denied by the kernel before any packet: in an
    // empty network namespace, so a missed deny cannot reach the network either.
    let deny = "import socket, sys\n\
                try:\n    socket.create_connection(('192.0.2.1', 443), timeout=2)\nexcept PermissionError:\n    sys.exit(0)\n\
                except OSError as e:\n    print(e)\n    sys.exit(3)\nsys.exit(4)\n";
    let (_, status) =
        run(command_in(Some(&web.cgroup), "/usr/bin/unshare", &["-n", "/usr/bin/python3", "-c", deny]));
    assert_eq!(status.code(), Some(0), "egress-outside-cluster-deny refuses the connect with EPERM");
    // Privileges: a root process steps down to nobody and back, killed as
    // CAP_SYS_ADMIN returns (privilege-escalation-enforce); one that gave up
    // root for good fails to take it back (a failed change, counted).
    let (_, status) = run(command_in(Some(&web.cgroup), &workload().display().to_string(), &["regain-root"]));
    assert_eq!(status.signal(), Some(9), "privilege-escalation-enforce kills the regain of root in shop");
    workload_in(&web.cgroup, &["setuid-denied"]);
    // A burst the 4 KiB ring buffer of node-b cannot hold.
    workload_in(&web.cgroup, &["open", "20000", "/etc/hostname"]);

    // Facts before queries: the kill and the deny reached Prometheus and Loki.
    for action in ["kill", "deny"] {
        eventually(&format!("Prometheus has the {action}"), Duration::from_secs(60), || {
            let q = format!("sum(podwatch_enforcement_actions_total{{node=\"node-a\", namespace=\"shop\", action=\"{action}\"}})");
            match prom.query(&q).first() {
                Some((_, v)) if *v >= 1.0 => Ok(()),
                other => Err(format!("{q} → {other:?}")),
            }
        });
        eventually(&format!("Loki has the {action}"), Duration::from_secs(60), || {
            let rows = loki.query_range(
                &format!("{{job=\"podwatch\", action=\"{action}\"}}"),
                Duration::from_secs(600),
            )?;
            if lines(&rows).is_empty() {
                return Err("no event yet".into());
            }
            Ok(())
        });
    }

    eventually("Prometheus has the failed setuid", Duration::from_secs(60), || {
        let q =
            "sum(podwatch_privilege_changes_total{node=\"node-a\", namespace=\"shop\", result=\"error\"})";
        match prom.query(q).first() {
            Some((_, v)) if *v >= 1.0 => Ok(()),
            other => Err(format!("{q} → {other:?}")),
        }
    });

    // Labels: what the sink really sent, and pod/container as structured metadata.
    let labels: BTreeSet<String> = loki.label_names().into_iter().collect();
    for want in ["job", "node", "namespace", "kind", "action", "cluster"] {
        assert!(labels.contains(want), "Loki has no `{want}` label; it has {labels:?}");
    }
    for forbidden in ["pod_uid", "pid", "path"] {
        assert!(!labels.contains(forbidden), "`{forbidden}` must not be a stream label");
    }
    let kill = loki.query_range(
        r#"{job="podwatch", action="kill"} | pod="web-1" | container="app""#,
        Duration::from_secs(600),
    );
    assert!(
        kill.as_ref().is_ok_and(|r| !lines(r).is_empty()),
        "the kill event carries pod and container metadata: {kill:?}"
    );
    let mut logql_all: Vec<(String, String)> = Vec::new();
    for q in panel_queries().iter().filter(|q| q.loki) {
        logql_all.push((q.to_string(), q.expr.clone()));
    }
    for (_, r) in rules(&loki_rules_path()) {
        logql_all.push((
            format!("loki rule {}", rule_name(&r)),
            r["expr"].as_str().unwrap_or_default().to_string(),
        ));
    }
    for (name, expr) in &logql_all {
        for l in stream_label_names(expr) {
            assert!(
                labels.contains(&l),
                "{name}: stream label `{l}` is not one the Loki sink sends ({labels:?})"
            );
        }
    }

    // Both agents' series are in Prometheus before the variables are read
    // (a variable query answers as soon as one node has been scraped).
    prom.expect("podwatch_build_info", "node", &[("node-a", 1.0), ("node-b", 1.0)]);

    // Variables, as Grafana evaluates them (label_values → label values API),
    // each with the ones before it set to All.
    let all: BTreeMap<String, String> = [
        ("job", "podwatch"),
        ("cluster", ".*"),
        ("node", ".*"),
        ("namespace", ".*"),
        ("workload", ".*"),
        ("pod", ".*"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut var_failures = Vec::new();
    for (file, d) in dashboards() {
        for (name, q) in variable_queries(&d) {
            let Some((sel, label)) = parse_label_values(&q) else {
                var_failures.push(format!("{file} / variable {name}: not label_values(): {q}"));
                continue;
            };
            let sel = substitute(&sel, &all);
            let path = format!("/api/v1/label/{label}/values?match[]={}", urlencode(&sel));
            let values = eventually(&format!("{file} / variable {name}"), Duration::from_secs(30), || {
                let (_, body) = http_get(&prom.addr, &path).map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let vals: Vec<String> = v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                if vals.is_empty() {
                    Err(format!("label_values({sel}, {label}) is empty: {body}"))
                } else {
                    Ok(vals)
                }
            });
            seen.entry(name).or_default().extend(values);
        }
    }
    assert!(var_failures.is_empty(), "{}", var_failures.join("\n"));
    for (var, want) in [
        ("job", "podwatch"),
        ("cluster", "e2e"),
        ("node", "node-a"),
        ("node", "node-b"),
        ("namespace", "shop"),
        ("workload", "deployment/web"),
        ("pod", "web-1"),
    ] {
        assert!(
            seen.get(var).is_some_and(|v| v.contains(want)),
            "variable {var} lists {:?}, not {want}",
            seen.get(var)
        );
    }
    // Real values as a person would pick them: the pod's namespace, workload
    // and pod, both live nodes (multi-select), the cluster.
    let real: BTreeMap<String, String> = [
        ("job", regex_format(&["podwatch".into()])),
        ("cluster", regex_format(&["e2e".into()])),
        ("node", regex_format(&["node-a".into(), "node-b".into()])),
        ("namespace", regex_format(&["shop".into()])),
        ("workload", regex_format(&["deployment/web".into()])),
        ("pod", regex_format(&["web-1".into()])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // Every panel query, with All and with the real values.
    let queries: Vec<DashQuery> = panel_queries();
    let mut runs = Vec::new();
    for (set, vars) in [("All", &all), ("real values", &real)] {
        for q in &queries {
            let expr = substitute(&q.expr, vars);
            assert!(!expr.contains('$'), "{q}: a variable left unsubstituted: {expr}");
            runs.push((format!("[{set}] {} / {}", q.dashboard, q.panel), expr, q.loki));
        }
    }
    let substituted_logql: Vec<(String, String)> =
        runs.iter().filter(|(_, _, l)| *l).map(|(n, e, _)| (n.clone(), e.clone())).collect();
    if let Some(errors) = logql_parse_errors(&substituted_logql) {
        assert!(errors.is_empty(), "LogQL @grafana/lezer-logql rejects:\n{}", errors.join("\n"));
    }
    let (results, failures) = run_until_data(&prom, &loki, &runs, Duration::from_secs(90));
    assert!(failures.is_empty(), "dashboard queries without data:\n{}", failures.join("\n"));
    // And the right data, not just some.
    let panel = |set: &str, dash: &str, title: &str| -> Vec<Value> {
        results
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("[{set}] {dash} / {title}")))
            .flat_map(|(_, v)| v.clone())
            .collect()
    };
    let has_line = |rows: &[Value], needle: &str| lines(rows).iter().any(|l| l.contains(needle));
    let kills = panel("real values", "overview.json", "Kills and denies");
    assert!(has_line(&kills, "kill shop/web-1 /bin/cat /etc/shadow"), "kills panel: {:?}", lines(&kills));
    assert!(
        has_line(&kills, "deny shop/web-1 /usr/bin/python3 192.0.2.1:443"),
        "kills panel: {:?}",
        lines(&kills)
    );
    let reads = panel("real values", "file-access.json", "Credential file reads");
    assert!(has_line(&reads, "/etc/shadow") && has_line(&reads, "/.ssh/id_rsa"), "{:?}", lines(&reads));
    assert!(
        !has_line(&reads, "/etc/passwd"),
        "passwd is counted, not a credential read: {:?}",
        lines(&reads)
    );
    let egress = panel("real values", "network.json", "Egress outside the cluster");
    assert!(has_line(&egress, "-> 192.0.2.1:443 EPERM"), "{:?}", lines(&egress));
    assert!(!has_line(&egress, "127.0.0.1"), "loopback is inside the cluster: {:?}", lines(&egress));
    let shells = panel("real values", "exec.json", "Shells in containers");
    assert!(has_line(&shells, "shop/web-1 /bin/bash"), "{:?}", lines(&shells));
    let killed = panel("real values", "overview.json", "Processes killed (range)");
    let v: f64 =
        killed.first().and_then(|r| r["value"][1].as_str()).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!(v >= 1.0, "one kill on each node that enforces: {killed:?}");

    // Prometheus rules: loaded and healthy; the scenario makes these fire.
    let must_fire: BTreeSet<&str> = [
        "PodwatchAgentDown",
        "PodwatchDaemonSetCoverage",
        "PodwatchRingBufferLoss",
        "PodwatchSinkFailing",
        "PodwatchPolicyReloadFailing",
        "PodwatchProcessKilled",
        "PodwatchActionDenied",
        "PodwatchSensitiveFileRead",
        "PodwatchShellInContainer",
        "PodwatchEgressOutsideCluster",
    ]
    .into();
    let mut rule_runs = Vec::new();
    for (_, r) in rules(&prometheus_rules_path()) {
        let name = rule_name(&r);
        let expr = r["expr"].as_str().unwrap_or_default().to_string();
        if r["record"].is_string() {
            rule_runs.push((format!("record {name}"), expr, false));
            rule_runs.push((format!("record {name} (stored)"), name.clone(), false));
        } else if must_fire.contains(name.as_str()) {
            rule_runs.push((format!("alert {name} (fires)"), expr, false));
        } else {
            rule_runs.push((format!("alert {name} (signal)"), alert_signal(&expr), false));
        }
    }
    let (_, failures) = run_until_data(&prom, &loki, &rule_runs, Duration::from_secs(60));
    assert!(failures.is_empty(), "Prometheus rule expressions without data:\n{}", failures.join("\n"));
    eventually("every Prometheus rule healthy, the security alerts firing", Duration::from_secs(30), || {
        let (_, body) = http_get(&prom.addr, "/api/v1/rules").map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        for g in v["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or("?");
                if r["health"] != "ok" {
                    problems.push(format!("{name}: health {} {}", r["health"], r["lastError"]));
                }
                if g["name"] == "podwatch.security" && r["state"] != "firing" {
                    problems.push(format!("{name}: state {}", r["state"]));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    });

    // Loki rules: every expression returns data from the agent's events, every
    // rule is healthy in the ruler, its alerts fire, its records reach Prometheus.
    let loki_runs: Vec<(String, String, bool)> = rules(&loki_rules_path())
        .into_iter()
        .map(|(_, r)| {
            (format!("loki rule {}", rule_name(&r)), r["expr"].as_str().unwrap_or_default().to_string(), true)
        })
        .collect();
    let (_, failures) = run_until_data(&prom, &loki, &loki_runs, Duration::from_secs(60));
    assert!(failures.is_empty(), "Loki rule expressions without data:\n{}", failures.join("\n"));
    eventually("every Loki rule healthy in the ruler, the alerts firing", Duration::from_secs(90), || {
        let rs = loki.rules()?;
        let want = rules(&loki_rules_path()).len();
        if rs.len() != want {
            return Err(format!("the ruler has {} of {want} rules", rs.len()));
        }
        let problems: Vec<String> = rs
            .iter()
            .filter(|(_, r)| r["health"] != "ok" || (r["type"] == "alerting" && r["state"] != "firing"))
            .map(|(g, r)| {
                format!("{g}/{}: health {} state {} {}", r["name"], r["health"], r["state"], r["lastError"])
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    });
    let records: Vec<(String, String, bool)> = rules(&loki_rules_path())
        .into_iter()
        .filter_map(|(_, r)| {
            r["record"].as_str().map(|n| (format!("Loki record {n} in Prometheus"), n.to_string(), false))
        })
        .collect();
    let (_, failures) = run_until_data(&prom, &loki, &records, Duration::from_secs(60));
    assert!(failures.is_empty(), "Loki recording rules not remote-written:\n{}", failures.join("\n"));
    drop((a, b));
}
