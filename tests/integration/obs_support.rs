//! Shared by the dashboard, rule and end-to-end observability tests: the
//! shipped dashboards and rule files, their queries, Grafana-style variable
//! substitution, Grafana's LogQL parser (node + @grafana/lezer-logql) and a
//! real Loki (../shared/bin/loki.zst or $PODWATCH_LOKI_BIN).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::harness::{free_port, http_get, http_get_with, tool_available, urlencode};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------- dashboards

pub const DASHBOARDS: [&str; 6] = [
    "overview.json",
    "exec.json",
    "file-access.json",
    "network.json",
    "privileges.json",
    "agent-health.json",
];

pub fn dashboard_dir() -> PathBuf {
    repo().join("dashboards/grafana")
}

/// (file name, parsed JSON) of every shipped dashboard.
pub fn dashboards() -> Vec<(String, Value)> {
    DASHBOARDS
        .iter()
        .map(|f| {
            let path = dashboard_dir().join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
            (f.to_string(), v)
        })
        .collect()
}

/// One query of a dashboard: a panel target or a variable's query.
#[derive(Debug, Clone)]
pub struct DashQuery {
    pub dashboard: String,
    /// Panel title, or `variable NAME`.
    pub panel: String,
    pub expr: String,
    pub loki: bool,
}

impl std::fmt::Display for DashQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}: {}", self.dashboard, self.panel, self.expr)
    }
}

pub fn panel_queries() -> Vec<DashQuery> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(DashQuery {
                    dashboard: file.clone(),
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                    loki: t["datasource"]["type"] == "loki",
                });
            }
        }
    }
    out
}

/// The query variables of a dashboard, in order: (name, query).
pub fn variable_queries(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
            (v["name"].as_str().unwrap_or_default().to_string(), q.to_string())
        })
        .collect()
}

/// `label_values(SELECTOR, LABEL)` → (SELECTOR, LABEL), as Grafana's
/// Prometheus data source runs it (/api/v1/label/LABEL/values?match[]=SELECTOR).
pub fn parse_label_values(q: &str) -> Option<(String, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (sel, label) = inner.rsplit_once(',')?;
    Some((sel.trim().to_string(), label.trim().to_string()))
}

/// Grafana's interval variables as the tests set them: the test Prometheus
/// scrapes every second and the scenario lasts about a minute.
pub const INTERVALS: [(&str, &str); 3] = [("$__rate_interval", "1m"), ("$__range", "10m"), ("$__auto", "1m")];

/// Replaces Grafana variables: `$__rate_interval`, `$__range`, `$__auto` and
/// each `$name`/`${name}` in `vars` (values already formatted).
pub fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_string();
    for (k, v) in INTERVALS {
        out = out.replace(k, v);
    }
    // Longest names first so `$pod` never eats part of a longer name.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]).replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// Grafana's regex formatting of a variable's selected values (Prometheus and
/// Loki alike): one value as is (regex-escaped), several as `(a|b)`.
pub fn regex_format(values: &[String]) -> String {
    let esc: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
    if esc.len() == 1 {
        esc[0].clone()
    } else {
        format!("({})", esc.join("|"))
    }
}

fn regex_escape(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

// ---------------------------------------------------------------- rule files

/// A rule of a rule file: (group, rule as YAML value).
pub fn rules(path: &Path) -> Vec<(String, serde_yaml::Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().into_iter().flatten() {
        let name = g["name"].as_str().unwrap_or("?").to_string();
        for r in g["rules"].as_sequence().into_iter().flatten() {
            out.push((name.clone(), r.clone()));
        }
    }
    out
}

pub fn rule_name(r: &serde_yaml::Value) -> String {
    r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?").to_string()
}

pub fn prometheus_rules_path() -> PathBuf {
    repo().join("prometheus/podwatch.rules.yml")
}

pub fn loki_rules_path() -> PathBuf {
    repo().join("loki/podwatch.rules.yml")
}

/// An alert's expression without its final comparison with a number
/// (`X > 0` → `X`): what must return data even when the alert is quiet.
pub fn alert_signal(expr: &str) -> String {
    let e = expr.trim_end();
    for op in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some((lhs, rhs)) = e.rsplit_once(op) {
            if rhs.trim().parse::<f64>().is_ok() {
                return lhs.trim_end().to_string();
            }
        }
    }
    e.to_string()
}

// ---------------------------------------------------------------- LogQL parser

/// Parses each (name, LogQL) with @grafana/lezer-logql; returns the failures.
/// None when node or the npm package is missing (and not required).
pub fn logql_parse_errors(items: &[(String, String)]) -> Option<Vec<String>> {
    if !tool_available("node", "Grafana's LogQL parser runs on Node") {
        return None;
    }
    let dir = repo().join("tests/logql");
    if !dir.join("node_modules/@grafana/lezer-logql/package.json").exists() {
        crate::harness::missing_tool("@grafana/lezer-logql in tests/logql/node_modules (npm ci)");
        return None;
    }
    let input: Vec<Value> = items.iter().map(|(n, e)| serde_json::json!({"name": n, "expr": e})).collect();
    let mut child = Command::new("node")
        .arg("parse.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&input).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("node parse.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let oks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    let errors: Vec<String> =
        stdout.lines().filter(|l| l.starts_with("error ")).map(str::to_string).collect();
    assert_eq!(
        oks + errors.len(),
        items.len(),
        "parse.mjs answered for every expression; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(errors)
}

// ---------------------------------------------------------------- real Loki

fn shared_loki_zst() -> PathBuf {
    repo().join("../shared/bin/loki.zst")
}

/// Loki must start when CI provides it (../shared/bin/loki.zst) or when
/// PODWATCH_REQUIRE_LOKI=1.
fn loki_required() -> bool {
    shared_loki_zst().exists() || std::env::var("PODWATCH_REQUIRE_LOKI").is_ok_and(|v| v == "1")
}

/// The Loki binary: $PODWATCH_LOKI_BIN, else ../shared/bin/loki.zst unpacked
/// once into the target directory.
fn loki_binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("PODWATCH_LOKI_BIN") {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("PODWATCH_LOKI_BIN={} does not exist", p.display()))
        };
    }
    let zst = shared_loki_zst();
    if !zst.exists() {
        return Err(format!("no PODWATCH_LOKI_BIN and no {}", zst.display()));
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loki");
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(o), std::fs::metadata(&zst)) else { return false };
        a.len() > 0 && a.modified().ok() >= b.modified().ok()
    };
    if !fresh(&out) {
        // Unpack beside, then rename: concurrent tests never run half a file.
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new("zstd")
            .args(["-d", "-q", "-f"])
            .arg(&zst)
            .arg("-o")
            .arg(&tmp)
            .status()
            .map_err(|e| format!("zstd (Debian package zstd): {e}"))?;
        if !status.success() {
            return Err(format!("zstd -d {} failed: {status}", zst.display()));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A real single-binary Loki 3 with its ruler, on loopback, in a temp dir.
pub struct Loki {
    child: Child,
    pub addr: String,
    pub tenant: String,
    pub dir: tempfile::TempDir,
}

impl Loki {
    /// Starts Loki with `rules` (file name, text) in `tenant`'s ruler
    /// directory; recording rules are remote-written to `remote_write` (a
    /// Prometheus push URL) when given. None (after saying why) when Loki is
    /// not available here and not required.
    pub fn start(tenant: &str, rules: &[(&str, &str)], remote_write: Option<&str>) -> Option<Loki> {
        let bin = match loki_binary() {
            Ok(b) => b,
            Err(e) if loki_required() => panic!("a real Loki is required here but: {e}"),
            Err(e) => {
                eprintln!("skipped: no Loki to test against ({e}); set PODWATCH_LOKI_BIN");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().display().to_string();
        let rules_dir = dir.path().join("rules").join(tenant);
        std::fs::create_dir_all(&rules_dir).expect("mkdir rules");
        for (name, text) in rules {
            std::fs::write(rules_dir.join(name), text).expect("write rules");
        }
        let (http, grpc) = (free_port(), free_port());
        let rw = match remote_write {
            Some(url) => format!(", wal: {{dir: {d}/ruler-wal}}, remote_write: {{enabled: true, clients: {{prom: {{url: \"{url}\"}}}}}}"),
            None => String::new(),
        };
        let config = format!(
            "auth_enabled: true
server: {{http_listen_address: 127.0.0.1, http_listen_port: {http}, grpc_listen_address: 127.0.0.1, grpc_listen_port: {grpc}, log_level: warn}}
common:
  instance_addr: 127.0.0.1
  path_prefix: {d}/data
  storage: {{filesystem: {{chunks_directory: {d}/chunks, rules_directory: {d}/rules}}}}
  replication_factor: 1
  ring: {{kvstore: {{store: inmemory}}}}
schema_config:
  configs: [{{from: 2020-10-24, store: tsdb, object_store: filesystem, schema: v13, index: {{prefix: index_, period: 24h}}}}]
limits_config: {{allow_structured_metadata: true, volume_enabled: true}}
pattern_ingester: {{enabled: false}}
analytics: {{reporting_enabled: false}}
ruler: {{rule_path: {d}/rules-tmp, enable_api: true, evaluation_interval: 5s, poll_interval: 5s{rw}}}
"
        );
        std::fs::write(dir.path().join("loki.yaml"), config).expect("write loki.yaml");
        let log = std::fs::File::create(dir.path().join("loki.log")).expect("log");
        let child = Command::new(&bin)
            .arg(format!("-config.file={d}/loki.yaml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let mut loki = Loki { child, addr: format!("127.0.0.1:{http}"), tenant: tenant.into(), dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = loki.child.try_wait() {
                panic!("Loki exited ({status}) before it was ready: {}", loki.log());
            }
            if let Ok((200, _)) = http_get(&loki.addr, "/ready") {
                return Some(loki);
            }
            assert!(Instant::now() < deadline, "Loki not ready within 120 s: {}", loki.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("loki.log")).unwrap_or_default()
    }

    /// GET with the tenant header → JSON, or the error.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let (code, body) = http_get_with(&self.addr, path, &[("X-Scope-OrgID", &self.tenant)])
            .map_err(|e| format!("GET {path}: {e}"))?;
        if code != 200 {
            return Err(format!("HTTP {code}: {}", body.trim()));
        }
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
    }

    /// `query_range` over the last `since`: the `data.result` array.
    pub fn query_range(&self, logql: &str, since: Duration) -> Result<Vec<Value>, String> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let start = now - since.as_nanos();
        let v = self.get(&format!(
            "/loki/api/v1/query_range?query={}&start={start}&end={now}&step=5s&limit=1000",
            urlencode(logql)
        ))?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Label names Loki holds for the tenant (what the sink really sent).
    pub fn label_names(&self) -> Vec<String> {
        self.get("/loki/api/v1/labels")
            .ok()
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The ruler's view: (group, rule JSON) for every loaded rule.
    pub fn rules(&self) -> Result<Vec<(String, Value)>, String> {
        let v = self.get("/prometheus/api/v1/rules")?;
        let mut out = Vec::new();
        for g in v["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                out.push((g["name"].as_str().unwrap_or("?").to_string(), r.clone()));
            }
        }
        Ok(out)
    }
}

impl Drop for Loki {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stream-selector label names used in a LogQL expression (`{a="x", b=~"y"}`).
pub fn stream_label_names(logql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = logql;
    while let Some(open) = rest.find('{') {
        // `{{` opens a line_format template, not a selector.
        if rest[open + 1..].starts_with('{') {
            rest = &rest[open + 2..];
            continue;
        }
        let Some(close) = rest[open..].find('}') else { break };
        let body = &rest[open + 1..open + close];
        for part in body.split(',') {
            let name: String =
                part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        rest = &rest[open + close + 1..];
    }
    out
}
