//! The agent's YAML config → the resolved configuration, through the pure
//! resolver (`RunArgs::resolve_yaml`: no file, no environment), then what
//! start-up derives from it without a network or files: redaction patterns
//! compiled and applied, sink URLs, queue/retry validation, librdkafka's
//! settings and the encoders.

#![no_main]

use libfuzzer_sys::fuzz_target;
use podwatch::{
    config::RunArgs,
    outputs::sinks::{kafka::KafkaEncoder, loki::LokiEncoder, otlp::OtlpEncoder},
    pipeline::redact::Redactor,
};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let args = RunArgs::default();
    let cfg = match args.resolve_yaml(Some(("fuzz.yaml", text)), first & 1 == 1, || "fuzz-host".into()) {
        Ok(c) => c,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let redactor = Redactor::new(&cfg.redaction_patterns, cfg.redaction_enabled)
        .expect("resolve already compiled the patterns");
    let mut argv: Vec<String> =
        ["curl", "-H", "Authorization: Bearer abc", "--password", "hunter2", "sk_live_abc123"]
            .map(str::to_owned)
            .to_vec();
    redactor.redact(&mut argv);
    let node = cfg.node_name.as_str();
    if let Some(c) = &cfg.sinks.loki {
        let _ = c.push_url();
        let _ = c.queue.validate("loki").and_then(|_| c.retry.validate("loki"));
        let _ = LokiEncoder::new(c, node);
    }
    if let Some(c) = &cfg.sinks.otlp {
        let _ = c.http_url();
        let _ = c.queue.validate("otlp").and_then(|_| c.retry.validate("otlp"));
        let _ = OtlpEncoder::new(c, node);
    }
    if let Some(c) = &cfg.sinks.kafka {
        // librdkafka's settings, unless they would read files (TLS, a password file).
        if c.tls.is_none() && c.sasl.as_ref().is_none_or(|s| s.password_file.is_none()) {
            let _ = c.client_config();
        }
        let _ = KafkaEncoder::new(c, node);
    }
});
