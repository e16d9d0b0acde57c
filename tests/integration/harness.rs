//! Test harness: the agent as a child process, fake pods as cgroups, and
//! helpers to run commands inside them.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use podwatch::pipeline::event::{Event, Kind};

pub const BIN: &str = env!("CARGO_BIN_EXE_podwatch");

/// Returns false (and says why) when the test cannot run here.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PODWATCH_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("PODWATCH_REQUIRE_PRIVILEGED=1 but not running as root");
    }
    eprintln!("skipped: needs root to load eBPF programs (run scripts/test.sh as root)");
    false
}

/// A tool a test needs is not installed: a failure when the test script
/// requires every tool (`PODWATCH_REQUIRE_TOOLS=1`, set by scripts/test.sh,
/// whose setup installs them), else a skip that says what is missing.
pub fn missing_tool(what: &str) {
    if std::env::var("PODWATCH_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("PODWATCH_REQUIRE_TOOLS=1 but {what} is missing (scripts/setup.sh --test installs it)");
    }
    eprintln!("skipped: {what} is missing (scripts/setup.sh --test installs it)");
}

/// False when `tool` is not on PATH (see `missing_tool`).
pub fn tool_available(tool: &str, why: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    missing_tool(&format!("`{tool}` ({why})"));
    false
}

macro_rules! require_root {
    () => {
        if !$crate::harness::privileged() {
            return;
        }
    };
}
pub(crate) use require_root;

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running agent whose stdout events are collected.
pub struct Agent {
    child: Child,
    pub addr: String,
    events: Arc<(Mutex<Vec<Event>>, Condvar)>,
    /// Started with `--events all`: every host exec is logged (see `drain`).
    events_all: bool,
    bad_lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Agent {
        let addr = format!("127.0.0.1:{}", free_port());
        let events_all = !extra.contains(&"--events") || extra.windows(2).any(|w| w == ["--events", "all"]);
        let mut child = Command::new(BIN)
            .args(["run", "--listen", &addr, "--log-level", "warn"])
            // Every event unless a test says otherwise, so tests see what their
            // processes did; policy tests pass `--events matched`.
            .args(if extra.contains(&"--events") { &[][..] } else { &["--events", "all"][..] })
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn podwatch");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let bad_lines = Arc::new(Mutex::new(Vec::new()));
        {
            let events = events.clone();
            let bad = bad_lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            let (lock, cv) = &*events;
                            lock.lock().expect("lock").push(ev);
                            cv.notify_all();
                        }
                        Err(e) => bad.lock().expect("lock").push(format!("{e}: {line}")),
                    }
                }
            });
        }
        let mut agent = Agent { child, addr, events, events_all, bad_lines };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        // Under qemu's TCG (the kernel matrix) verifying the programs takes minutes.
        let secs =
            std::env::var("PODWATCH_READY_TIMEOUT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(90);
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited before it was ready: {status} (its stderr is above)");
            }
            if let Ok((200, _)) = http_get(&self.addr, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("agent at {} not ready within {secs} s", self.addr);
    }

    /// Waits until `pred` holds for at least `n` events; returns the matches.
    /// Scans each event once (new ones as they arrive), so long waits over
    /// large event volumes stay linear.
    pub fn wait_n(&self, n: usize, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.events;
        let mut guard = lock.lock().expect("lock");
        let mut found = Vec::new();
        let mut scanned = 0;
        loop {
            found.extend(guard[scanned..].iter().filter(|e| pred(e)).cloned());
            scanned = guard.len();
            let now = Instant::now();
            if found.len() >= n || now >= deadline {
                return found;
            }
            guard = cv.wait_timeout(guard, deadline - now).expect("wait").0;
        }
    }

    /// Waits for one matching event, panicking with context if none comes.
    pub fn expect_one(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let found = self.wait_n(1, Duration::from_secs(20), pred);
        match found.into_iter().next() {
            Some(e) => e,
            None => panic!("no {what} event within 20 s; {} events seen", self.count()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn count(&self) -> usize {
        self.events.0.lock().expect("lock").len()
    }

    /// Returns every match once everything that happened before this call
    /// has been read: a sentinel process runs on the host and its exec event
    /// is waited for. The kernel ring buffer is consumed in the order records
    /// were reserved and the reader and the stdout output keep that order, so
    /// when the sentinel's event has arrived, every earlier event has too.
    /// Needs an agent that logs host execs (`--events all`, the default here).
    pub fn drain(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        assert!(self.events_all, "drain() needs an agent started with --events all");
        let marker = format!("podwatch-sentinel-{}", uuid());
        let deadline = Instant::now() + Duration::from_secs(60);
        // A sentinel can itself be lost when a test overflows the ring buffer
        // on purpose: run another until one arrives.
        loop {
            let mut sentinel = Command::new("/bin/true");
            sentinel.arg(&marker).env_clear();
            let (pid, _) = run(sentinel);
            let seen = self.wait_n(1, Duration::from_secs(3), |e| {
                e.kind == Kind::Exec && e.process.pid == pid && e.process.args.contains(&marker)
            });
            if !seen.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "no sentinel event arrived within 60 s");
        }
        self.wait_n(usize::MAX, Duration::ZERO, pred)
    }

    /// Scrapes /metrics until `family` summed over series with these exact
    /// labels equals `want`; returns that scrape. Kernel counters are exact the
    /// moment a process has finished, but pod labels resolve in user space.
    pub fn wait_metric(&self, family: &str, labels: &[(&str, &str)], want: f64) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = http_get(&self.addr, "/metrics").expect("GET /metrics");
            let got = metric_sum(&body, family, labels);
            if got == Some(want) {
                return body;
            }
            assert!(Instant::now() < deadline, "{family}{labels:?}: wanted {want}, /metrics says {got:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        let (code, body) = http_get(&self.addr, "/stats").expect("GET /stats");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("stats JSON")
    }

    pub fn bad_lines(&self) -> Vec<String> {
        self.bad_lines.lock().expect("lock").clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(addr, path, &[])
}

/// HTTP/1.0 GET with extra request headers (e.g. a Loki tenant).
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}

pub fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("uuid").trim().to_owned()
}

pub fn cgroup2_root() -> PathBuf {
    podwatch::pods::cgroup::cgroup2_mount().expect("a cgroup2 hierarchy is mounted")
}

/// A pod as kubelet lays it out in cgroup2: the directories are real, so a
/// process moved into the container's cgroup gets that cgroup's id in the kernel.
pub struct FakePod {
    pub uid: String,
    pub container_id: String,
    /// The container cgroup, absolute.
    pub cgroup: PathBuf,
    created: Vec<PathBuf>,
}

impl FakePod {
    /// systemd driver, containerd: kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope
    pub fn systemd(qos: &str) -> FakePod {
        let uid = uuid();
        let id = container_id();
        let rel = format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        FakePod::create(uid, id, &rel)
    }

    /// cgroupfs driver: kubepods/<qos>/pod<uid>/<id>
    pub fn cgroupfs(qos: &str) -> FakePod {
        let uid = uuid();
        let id = container_id();
        let rel = format!("kubepods/{qos}/pod{uid}/{id}");
        FakePod::create(uid, id, &rel)
    }

    /// A cgroup of no known shape (not a pod).
    pub fn unknown_shape() -> FakePod {
        let rel = format!("podwatch-test-{}/odd.scope", uuid());
        FakePod::create(String::new(), String::new(), &rel)
    }

    fn create(uid: String, container_id: String, rel: &str) -> FakePod {
        let root = cgroup2_root();
        let mut created = Vec::new();
        let mut dir = root.clone();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        FakePod { uid, container_id, cgroup: dir, created }
    }

    pub fn cgroup_id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.cgroup).expect("cgroup").ino()
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        // Processes are gone by now; directories go innermost first, and only
        // the ones this pod created (kubepods.slice may be shared).
        for dir in self.created.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn container_id() -> String {
    format!("{}{}", uuid().replace('-', ""), uuid().replace('-', ""))
}

/// A command that moves itself into `cgroup` (if any) before exec, so its
/// very first event already carries the cgroup.
pub fn command_in(cgroup: Option<&Path>, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    // cargo test points LD_LIBRARY_PATH at the toolchain; children should load
    // libraries as they would anywhere else.
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null()).env_remove("LD_LIBRARY_PATH");
    if let Some(cg) = cgroup {
        let procs =
            std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

/// Runs a command to completion: (pid, status).
pub fn run(mut cmd: Command) -> (u32, ExitStatus) {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let status = child.wait().expect("wait");
    (pid, status)
}

/// Runs a command built by `make` to completion, spawning again while the
/// kernel says ETXTBSY: a binary the test has just copied may still be open
/// for writing in a child another test forked meanwhile (it holds the
/// descriptor until it execs).
pub fn run_fresh_binary(make: impl Fn() -> Command) -> (u32, ExitStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = loop {
        match make().spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::yield_now()
            }
            Err(e) => panic!("spawn {:?}: {e}", make().get_program()),
        }
    };
    let pid = child.id();
    (pid, child.wait().expect("wait"))
}

pub fn bash_in(cgroup: Option<&Path>, script: &str) -> (u32, ExitStatus) {
    run(command_in(cgroup, "/bin/bash", &["-c", script]))
}

pub fn ends_with<S: AsRef<str>>(s: &Option<S>, suffix: &str) -> bool {
    s.as_ref().is_some_and(|s| s.as_ref().ends_with(suffix))
}

/// The static workload binary (tests/integration/workload.c), built once.
pub fn workload() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // Prebuilt where there is no compiler (the kernel-matrix VMs).
        if let Some(prebuilt) = std::env::var_os("PODWATCH_WORKLOAD") {
            return PathBuf::from(prebuilt);
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/integration/workload.c");
        let dir = std::env::temp_dir().join(format!("podwatch-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = dir.join("workload");
        let status = Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("gcc (build-essential) is needed for the counter tests");
        assert!(status.success(), "building the workload failed");
        out
    })
}

/// Runs the workload in a cgroup and checks it succeeded.
pub fn workload_in(cgroup: &Path, args: &[&str]) -> u32 {
    let bin = workload().display().to_string();
    let (pid, status) = run(command_in(Some(cgroup), &bin, args));
    assert!(status.success(), "workload {args:?} failed: {status:?}");
    pid
}

/// Sums the samples of `family` whose labels include every `want` pair, from
/// OpenMetrics / Prometheus text.
pub fn metric_sum(text: &str, family: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap_or(l))),
            None => (series, Vec::new()),
        };
        if name != family {
            continue;
        }
        if want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v)) {
            let v: f64 = value.parse().unwrap_or(f64::NAN);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `a="x",b="y\"z"` → [(a, x), (b, y"z)]: exact pairs, so `pod="ab"` never
/// matches `pod="abc"` and a comma inside a value does not split it.
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    out
}

/// A pod for the static metadata file: (pod, namespace, name, workload kind/name).
pub type PodDef<'a> = (&'a FakePod, &'a str, &'a str, Option<(&'a str, &'a str)>);

/// Writes a static pod metadata file (the `file` source) and returns its path.
/// Each pod gets the label app=<name> and one container named `app`.
pub fn pods_file(dir: &Path, pods: &[PodDef]) -> String {
    let mut yaml = String::new();
    for (pod, ns, name, workload) in pods {
        yaml.push_str(&format!(
            "- uid: {}\n  namespace: {ns}\n  name: {name}\n  labels: {{app: {name}}}\n",
            pod.uid
        ));
        if let Some((kind, w)) = workload {
            yaml.push_str(&format!("  workload: {{kind: {kind}, name: {w}}}\n"));
        }
        yaml.push_str(&format!("  containers:\n  - {{id: {}, name: app}}\n", pod.container_id));
    }
    let path = dir.join("pods.yaml");
    std::fs::write(&path, yaml).expect("write pods");
    path.display().to_string()
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus (Debian package `prometheus`, installed by
/// scripts/setup.sh --test) with its own temporary storage.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `podwatch`.
    pub fn start(target: &str) -> Prometheus {
        Prometheus::start_config(
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: podwatch\n  static_configs:\n  - targets: ['{target}']\n"
            ),
            &[],
        )
    }

    /// With a whole prometheus.yml and extra command-line flags.
    pub fn start_config(config: &str, flags: &[&str]) -> Prometheus {
        Prometheus::start_at(&format!("127.0.0.1:{}", free_port()), config, flags)
    }

    /// At a chosen address (when others must know it before it starts).
    pub fn start_at(addr: &str, config: &str, flags: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let addr = addr.to_string();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`, installed by scripts/setup.sh)");
        Prometheus { child, addr, _dir: dir }
    }

    /// Instant query: the result array, or Prometheus' error.
    pub fn query_result(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let (code, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", urlencode(promql)))
            .map_err(|e| format!("GET /api/v1/query: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("HTTP {code}: {} {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Instant query → (labels, value) pairs; empty on any error.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        self.query_result(promql)
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let v = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// Polls a query until each (label value of `by`, expected) pair matches.
    pub fn expect(&self, promql: &str, by: &str, want: &[(&str, f64)]) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(promql);
            let ok = want.iter().all(|(label, value)| {
                last.iter().any(|(m, v)| m[by].as_str() == Some(label) && (v - value).abs() < 1e-9)
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{promql}: wanted {want:?}, Prometheus says {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
