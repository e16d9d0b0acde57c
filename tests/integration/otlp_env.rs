//! The OTLP sink's standard `OTEL_*` settings, each shown changing what
//! reaches the collector double (paths, headers, encodings, bodies), and the
//! reason the gRPC path keeps its generated client. The variables are given
//! to `otlp::start_with_env` as a map, so these tests never touch the
//! process environment (tests run in parallel).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use podwatch::outputs::sinks::{
    framework::SinkStatsSnapshot,
    otlp::{self, OtlpConfig},
};

use crate::{
    otlp_double::{attr, Behaviour, OtlpDouble},
    sinks::{check_otlp, event},
};

type Vars<'a> = &'a [(&'a str, &'a str)];

fn env(vars: Vars) -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| vars.get(name).cloned()
}

/// Starts the sink from `yaml` and `vars`, offers `n` events, waits until
/// each is settled (sent, failed or dropped) and stops it.
async fn run(yaml: &str, vars: Vars<'_>, n: u32) -> SinkStatsSnapshot {
    let cfg: OtlpConfig = serde_yaml::from_str(yaml).expect("yaml");
    let sink = otlp::start_with_env(&cfg, "node-1", &env(vars)).expect("start");
    for s in 0..n {
        sink.offer(&event(s));
    }
    let t0 = std::time::Instant::now();
    let stats = loop {
        let s = sink.snapshot();
        if s.sent + s.failed + s.dropped == u64::from(n) || t0.elapsed() > Duration::from_secs(15) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sink.shutdown(tokio::time::Instant::now() + Duration::from_secs(2)).await;
    stats
}

const FAST: &str = "queue: {linger_ms: 10}, retry: {max_retries: 0}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_endpoint_is_used_unchanged_and_the_generic_one_gets_v1_logs() {
    let rx = OtlpDouble::http().await;
    let custom = format!("{}/custom/ingest", rx.url());
    let vars = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", custom.as_str()),
        // The signal-specific one wins over the generic one.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
    ];
    let s = run(&format!("{{{FAST}}}"), &vars, 3).await;
    assert_eq!(s.sent, 3, "{s:?}");
    assert!(rx.received().iter().all(|r| r.path == "/custom/ingest"), "{:?}", rx.received());

    let rx = OtlpDouble::http().await;
    let base = format!("{}/base/", rx.url());
    let vars =
        [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str())];
    assert_eq!(run(&format!("{{{FAST}}}"), &vars, 3).await.sent, 3);
    assert!(rx.received().iter().all(|r| r.path == "/base/v1/logs"), "{:?}", rx.received());

    // gRPC takes the generic endpoint as it is; the YAML's wins over both.
    let grpc = OtlpDouble::grpc(0).await;
    let url = grpc.url();
    assert_eq!(
        run(&format!("{{{FAST}}}"), &[("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str())], 3).await.sent,
        3
    );
    assert_eq!(grpc.record_count(), 3);
    let yaml = format!("{{endpoint: '{url}', {FAST}}}");
    assert_eq!(run(&yaml, &[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://127.0.0.1:1")], 2).await.sent, 2);
    assert_eq!(grpc.record_count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_env_are_percent_decoded_and_yaml_wins_per_key() {
    let http = OtlpDouble::http().await;
    let grpc = OtlpDouble::grpc(0).await;
    let vars = [
        ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20t0k, x-team=ops"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-tenant=a%3Db"),
    ];
    for (proto, rx) in [("http/protobuf", &http), ("grpc", &grpc)] {
        let yaml =
            format!("{{endpoint: '{}', protocol: {proto}, headers: {{x-team: sec}}, {FAST}}}", rx.url());
        assert_eq!(run(&yaml, &vars, 5).await.sent, 5, "{proto}");
        check_otlp(rx, 5);
        for r in rx.received() {
            assert_eq!(r.header("authorization"), Some("Bearer t0k"), "{proto}: {:?}", r.headers);
            assert_eq!(r.header("x-tenant"), Some("a=b"), "{proto}");
            assert_eq!(r.header("x-team"), Some("sec"), "{proto}: the YAML wins");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_picks_protobuf_json_or_grpc() {
    let yaml = "{headers: {x-team: sec}, queue: {linger_ms: 10}, retry: {max_retries: 0}}";
    for (protocol, content_type) in
        [("http/protobuf", "application/x-protobuf"), ("http/json", "application/json")]
    {
        let rx = OtlpDouble::http().await;
        let url = rx.url();
        let vars =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", protocol)];
        assert_eq!(run(yaml, &vars, 30).await.sent, 30, "{protocol}");
        // Decoded by the double (JSON through the OTLP/JSON mapping), same records.
        check_otlp(&rx, 30);
        assert!(rx.received().iter().all(|r| r.header("content-type") == Some(content_type)), "{protocol}");
    }
    let rx = OtlpDouble::grpc(0).await;
    let url = rx.url();
    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
    assert_eq!(run(yaml, &vars, 30).await.sent, 30);
    check_otlp(&rx, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_gzip_on_both_transports() {
    let gzip = [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")];
    let yaml = |url: &str, proto: &str, extra: &str| {
        format!("{{endpoint: '{url}', protocol: {proto}, headers: {{x-team: sec}}, {extra} {FAST}}}")
    };
    for proto in ["http/protobuf", "http/json"] {
        let rx = OtlpDouble::http().await;
        assert_eq!(run(&yaml(&rx.url(), proto, ""), &gzip, 20).await.sent, 20);
        check_otlp(&rx, 20);
        assert!(rx.received().iter().all(|r| r.header("content-encoding") == Some("gzip")), "{proto}");
        // compression: none in the YAML wins over the variable.
        let rx = OtlpDouble::http().await;
        assert_eq!(run(&yaml(&rx.url(), proto, "compression: none,"), &gzip, 20).await.sent, 20);
        check_otlp(&rx, 20);
        assert!(rx.received().iter().all(|r| r.header("content-encoding").is_none()), "{proto}");
    }
    let rx = OtlpDouble::grpc(0).await;
    assert_eq!(run(&yaml(&rx.url(), "grpc", ""), &gzip, 20).await.sent, 20);
    check_otlp(&rx, 20);
    assert!(
        rx.received().iter().all(|r| r.header("grpc-encoding") == Some("gzip")),
        "{:?}",
        rx.received()[0].headers
    );
    let rx = OtlpDouble::grpc(0).await;
    assert_eq!(run(&yaml(&rx.url(), "grpc", ""), &[], 20).await.sent, 20);
    assert!(rx.received().iter().all(|r| r.header("grpc-encoding").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_bounds_each_request() {
    for proto in ["http/protobuf", "grpc"] {
        let rx = if proto == "grpc" { OtlpDouble::grpc(0).await } else { OtlpDouble::http().await };
        rx.set_behaviour(Behaviour { delay: Duration::from_millis(1500), ..Default::default() });
        let yaml = format!("{{endpoint: '{}', protocol: {proto}, {FAST}}}", rx.url());
        let s = run(&yaml, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "200")], 4).await;
        assert_eq!((s.sent, s.failed), (0, 4), "{proto}: {s:?}");
        // The logs-specific variable wins; a long enough timeout delivers.
        let vars = [("OTEL_EXPORTER_OTLP_TIMEOUT", "200"), ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "5000")];
        let s = run(&yaml, &vars, 4).await;
        assert_eq!((s.sent, s.failed), (4, 0), "{proto}: {s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_attributes_and_service_name_from_env() {
    let vars = [
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod,deployment.environment=staging%2Ceu"),
        ("OTEL_SERVICE_NAME", "podwatch-edge"),
    ];
    for proto in ["http/protobuf", "http/json", "grpc"] {
        let rx = if proto == "grpc" { OtlpDouble::grpc(0).await } else { OtlpDouble::http().await };
        let yaml = format!(
            "{{endpoint: '{}', protocol: {proto}, resource_attributes: {{k8s.cluster.name: dev}}, {FAST}}}",
            rx.url()
        );
        assert_eq!(run(&yaml, &vars, 3).await.sent, 3, "{proto}");
        for r in rx.received() {
            let res = &r.request.resource_logs[0].resource.as_ref().expect("resource").attributes;
            assert_eq!(attr(res, "service.name").as_deref(), Some("podwatch-edge"), "{proto}");
            assert_eq!(attr(res, "deployment.environment").as_deref(), Some("staging,eu"), "{proto}");
            assert_eq!(attr(res, "k8s.cluster.name").as_deref(), Some("dev"), "{proto}: the YAML wins");
            assert_eq!(attr(res, "k8s.node.name").as_deref(), Some("node-1"), "{proto}");
        }
    }
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with the openssl CLI.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Option<Pki> {
    let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -days 1 -subj /CN=podwatch-otlp-test-ca -keyout ca.key -out ca.pem
for who in server client; do
  openssl req $ec -subj /CN=$who -keyout $who.key -out $who.csr
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile $who.ext -out $who.pem
done"#;
    let ok = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let p = |n: &str| dir.join(n);
    ok.then(|| Pki {
        ca: p("ca.pem"),
        server: (p("server.pem"), p("server.key")),
        client: (p("client.pem"), p("client.key")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_client_certificate_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = pki(dir.path()) else {
        crate::harness::missing_tool("the openssl CLI (Debian package openssl)");
        return;
    };
    let read = |p: &PathBuf| std::fs::read(p).unwrap();
    let ca = pki.ca.display().to_string();
    let (cert, key) = (pki.client.0.display().to_string(), pki.client.1.display().to_string());

    // Server TLS: trusted through OTEL_EXPORTER_OTLP_CERTIFICATE only.
    let rx = OtlpDouble::grpc_tls(&read(&pki.server.0), &read(&pki.server.1)).await;
    let endpoint = format!("https://{}", rx.addr);
    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let s = run(&format!("{{{FAST}}}"), &vars, 3).await;
    assert_eq!((s.sent, s.failed), (0, 3), "system roots do not know the test CA: {s:?}");
    let vars = [vars[0], ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str())];
    assert_eq!(run(&format!("{{{FAST}}}"), &vars, 3).await.sent, 3);
    assert_eq!(rx.record_count(), 3);

    // Mutual TLS: the client certificate and key from the environment.
    let rx =
        OtlpDouble::grpc_tls_with(&read(&pki.server.0), &read(&pki.server.1), Some(&read(&pki.ca))).await;
    let endpoint = format!("https://{}", rx.addr);
    let mut vars = vec![
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
    ];
    let s = run(&format!("{{{FAST}}}"), &vars, 3).await;
    assert_eq!((s.sent, s.failed), (0, 3), "no client certificate: refused: {s:?}");
    vars.extend([
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
    ]);
    assert_eq!(run(&format!("{{{FAST}}}"), &vars, 3).await.sent, 3);
    assert_eq!(rx.record_count(), 3);
}

/// Every malformed value stops the start with a message naming the
/// variable; nothing panics.
#[tokio::test]
async fn malformed_values_are_start_up_errors() {
    let cases = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "k=%G0"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "thrift"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/nonexistent/cert.pem"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name"),
    ];
    for (name, value) in cases {
        let mut vars = vec![(name, value)];
        if name.contains("CERTIFICATE") {
            vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4317"));
        }
        if name == "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" {
            vars.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/nonexistent/key.pem"));
        }
        let e = match otlp::start_with_env(&OtlpConfig::default(), "n", &env(&vars)) {
            Ok(_) => panic!("{name}={value:?} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(name) || e.contains(value), "{name}={value:?}: {e}");
    }
}

/// Why gRPC keeps the generated client: against a collector that rejects
/// part of every batch, `opentelemetry-otlp`'s own tonic exporter reports
/// plain success, so the rejected records would count as sent. The sink
/// counts them failed (gRPC, and HTTP JSON/protobuf through the exporter,
/// whose answer our client keeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_grpc_exporter_hides_partial_success() {
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLoggerProvider};

    let rx = OtlpDouble::grpc(0).await;
    rx.set_behaviour(Behaviour { reject: 2, ..Default::default() });
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(rx.url())
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .build()
        .expect("exporter");
    let provider = SdkLoggerProvider::builder().build();
    let mut records = Vec::new();
    for _ in 0..3 {
        let mut r = provider.logger("t").create_log_record();
        r.set_observed_timestamp(std::time::SystemTime::now());
        records.push(r);
    }
    let scope = opentelemetry::InstrumentationScope::builder("t").build();
    let batch: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
    let sdk = exporter.export(LogBatch::new(&batch)).await;
    assert_eq!(rx.record_count(), 3);
    assert!(sdk.is_ok(), "the SDK exporter reports success for a batch with 2 of 3 rejected: {sdk:?}");

    for proto in ["grpc", "http/protobuf", "http/json"] {
        let rx = if proto == "grpc" { OtlpDouble::grpc(0).await } else { OtlpDouble::http().await };
        rx.set_behaviour(Behaviour { reject: 2, ..Default::default() });
        let yaml = format!(
            "{{endpoint: '{}', protocol: {proto}, queue: {{linger_ms: 10, batch_max_events: 10}}}}",
            rx.url()
        );
        let s = run(&yaml, &[], 30).await;
        assert_eq!(
            (s.sent, s.failed, s.batches),
            (24, 6, 3),
            "{proto}: 2 of each batch of 10 rejected: {s:?}"
        );
    }
}
