//! A real Kafka-protocol broker for the sink tests: `tansu` (crates.io,
//! installed by scripts/setup.sh) with in-memory storage on a free loopback
//! port, started and stopped by the test (killed on drop, also on panic), and
//! an independent consumer: librdkafka via PyPI's `confluent-kafka`, driven
//! through a small Python script.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// False (with the reason printed) when tansu or confluent-kafka is missing;
/// with `PODWATCH_REQUIRE_KAFKA=1` (CI) that is a failure instead.
pub fn available() -> bool {
    let tansu = Command::new("tansu").arg("--version").output().is_ok_and(|o| o.status.success());
    let py = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success());
    if tansu && py {
        return true;
    }
    let why = format!("tansu: {}, python3 confluent_kafka: {} (run scripts/setup.sh)", tansu, py);
    if std::env::var("PODWATCH_REQUIRE_KAFKA").is_ok_and(|v| v == "1") {
        panic!("PODWATCH_REQUIRE_KAFKA=1 but {why}");
    }
    eprintln!("skipped: {why}");
    false
}

pub struct Tansu {
    pub port: u16,
    /// The address clients are told to use (the port of a `Cutoff` in front of
    /// the broker, or the broker's own).
    advertised: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Tansu {
    pub fn start(port: u16) -> Tansu {
        Tansu::start_advertising(port, port)
    }

    /// A broker on `port` that tells clients to connect to `advertised`.
    pub fn start_advertising(port: u16, advertised: u16) -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let mut t = Tansu { port, advertised, child: None, log, _dir: dir };
        t.restart();
        t
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Starts the broker (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tansu exited ({st}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "tansu did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        run_py(&["create", &self.bootstrap(), topic, &partitions.to_string()], Duration::from_secs(60));
    }

    /// Every message of `topic` from the beginning: stops at `want` messages
    /// or after `idle` without a new one.
    pub fn consume(&self, topic: &str, want: usize, idle: Duration) -> Vec<Message> {
        let out = run_py(
            &["consume", &self.bootstrap(), topic, &want.to_string(), &idle.as_secs_f64().to_string()],
            Duration::from_secs(180),
        );
        out.lines().map(|l| serde_json::from_str(l).expect("consumer output")).collect()
    }
}

/// A TCP relay in front of the broker that can cut it off: `down()` resets
/// every relayed connection and closes new ones at once, as a dead broker
/// would look to clients; `up()` relays again. The broker itself keeps its
/// topics (tansu's in-memory storage loses them on a real restart, and then
/// acknowledges writes to the missing topic).
pub struct Cutoff {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Cutoff {
    pub fn start(port: u16, broker_port: u16) -> Cutoff {
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind cutoff");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", broker_port)) else { continue };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                if let Ok(mut list) = conns2.lock() {
                    list.extend([c2, s2]);
                }
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    })
                };
                let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else { continue };
                pipe(client, s3);
                pipe(server, c3);
            }
        });
        Cutoff { port, up, conns }
    }

    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for c in list.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Message {
    pub partition: i32,
    pub key: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub value: String,
}

const SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

mode, bootstrap, topic = sys.argv[1:4]
if mode == "create":
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 50
    while True:
        try:
            fs = admin.create_topics([NewTopic(topic, num_partitions=int(sys.argv[4]), replication_factor=1)])
            fs[topic].result(10)
            break
        except Exception as e:
            if "already exists" in str(e).lower() or "TOPIC_ALREADY_EXISTS" in str(e):
                break
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    sys.exit(0)

want, idle = int(sys.argv[4]), float(sys.argv[5])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "podwatch-test", "enable.auto.commit": False,
              "auto.offset.reset": "earliest"})
md = c.list_topics(topic, timeout=20)
parts = md.topics[topic].partitions
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
n, last = 0, time.time()
while n < want and time.time() - last < idle:
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        print("consumer error:", m.error(), file=sys.stderr)
        continue
    last = time.time()
    n += 1
    print(json.dumps({
        "partition": m.partition(),
        "key": m.key().decode() if m.key() is not None else None,
        "headers": {k: (v.decode() if v is not None else "") for k, v in (m.headers() or [])},
        "value": m.value().decode(),
    }), flush=True)
c.close()
"#;

fn run_py(args: &[&str], limit: Duration) -> String {
    let child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // Read the output on a thread (a full pipe would block the helper).
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(limit) else {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("python kafka helper {args:?} did not finish within {limit:?}");
    };
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "python kafka helper {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
