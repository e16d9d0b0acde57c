//! Sinks end to end through the real agent (the sinks' own tests, in-process,
//! are in sinks.rs).

use std::time::Duration;

/// End to end through the real agent: a process in a fake pod → kernel →
/// agent → Loki sink → the Loki test double (no Loki runs here), with the
/// sink's counters on /metrics.
#[test]
fn agent_ships_pod_events_to_loki() {
    if !crate::harness::privileged() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let loki = rt.block_on(crate::loki_double::LokiDouble::start());
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("podwatch.yaml");
    std::fs::write(&cfg, format!("sinks:\n  loki:\n    url: {}\n    tenant: team-a\n", loki.url()))
        .expect("cfg");
    let pod = crate::harness::FakePod::systemd("burstable");
    let agent =
        crate::harness::Agent::start_with(&["--config", &cfg.display().to_string(), "--output", "none"]);
    let (bash, _) = crate::harness::bash_in(Some(&pod.cgroup), "/bin/cat /etc/hostname >/dev/null");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = loki.accepted().into_iter().find(|(_, e)| {
            serde_json::from_str::<podwatch::pipeline::event::Event>(&e.line).is_ok_and(|ev| {
                ev.process.parent.as_ref().is_some_and(|p| p.pid == bash) && ev.file.is_some()
            })
        });
        if let Some(f) = found {
            break f;
        }
        assert!(std::time::Instant::now() < deadline, "no event of the pod reached Loki");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (labels, entry) = line;
    assert!(labels.contains("kind=\"file\""), "{labels}");
    assert!(!labels.contains(&pod.uid), "pod uid must not be a stream label: {labels}");
    let ev: podwatch::pipeline::event::Event = serde_json::from_str(&entry.line).expect("event JSON");
    assert_eq!(ev.pod.map(|p| p.uid.clone()), Some(pod.uid.clone()));
    assert!(loki.attempts().iter().all(|a| a.tenant.as_deref() == Some("team-a")));
    let (_, body) = crate::harness::http_get(&agent.addr, "/metrics").expect("scrape");
    let sent = crate::harness::metric_sum(
        &body,
        "podwatch_sink_events_total",
        &[("sink", "loki"), ("outcome", "sent")],
    );
    assert!(sent.is_some_and(|v| v >= 1.0), "sink counters on /metrics: {sent:?}");
}
