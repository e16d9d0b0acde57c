//! What sinks read back from their backends: HTTP status, headers and body
//! (OTLP/HTTP protobuf and JSON, Loki, the shared classifier), gRPC status trailers and
//! response messages (OTLP/gRPC), and `Retry-After` through the retry
//! policy to the instant the next attempt is scheduled for.
//!
//! Input: status (u16 LE), retry number (u8), jitter (u8), then the retry
//! config's `max_retry_after_seconds`, `initial_backoff_ms` and
//! `max_backoff_ms` (u64 LE each), then `name: value` header lines, a blank
//! line, and the body (no blank line: all body).

#![no_main]

use std::{
    future::Future,
    pin::pin,
    sync::Once,
    task::{Context, Poll, Waker},
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::{
    header::{HeaderName, HeaderValue},
    HeaderMap, StatusCode,
};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use podwatch::outputs::sinks::{
    framework::{parse_retry_after, RetryConfig, SendError, Sent, MAX_RETRY_WAIT},
    http::classify,
    loki, otlp,
};
use prost::Message as _;

/// Polls a future that never waits to its end.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("nothing here waits"),
    }
}

/// libfuzzer-sys aborts on every panic, caught or not. tonic's known panic
/// on a `grpc-status-details-bin` that is not base64 (grpc/grpc-rust#2618)
/// is caught by `otlp::guarded_export`; let exactly that one unwind to it.
fn let_tonic_status_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tonic_status = info
                .location()
                .is_some_and(|l| l.file().contains("/tonic-") && l.file().ends_with("src/status.rs"));
            if !in_tonic_status {
                abort(info);
            }
        }));
    });
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn check(outcome: Result<Sent, SendError>) {
    match outcome {
        Ok(Sent::Partial { rejected }) => assert!(rejected > 0, "a partial success rejects something"),
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let_tonic_status_panics_unwind();
    if data.len() < 28 {
        return;
    }
    let (head, rest) = data.split_at(28);
    let Ok(status) = StatusCode::from_u16(u16::from_le_bytes([head[0], head[1]])) else { return };
    let retry = u32::from(head[2]);
    let rand01 = f64::from(head[3]) / 256.0;
    let retry_cfg = RetryConfig {
        max_retry_after_seconds: u64_at(head, 4),
        initial_backoff_ms: u64_at(head, 12),
        max_backoff_ms: u64_at(head, 20),
        ..RetryConfig::default()
    };

    let (header_block, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&b""[..], rest),
    };
    let mut headers = HeaderMap::new();
    for line in header_block.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    let body = Bytes::copy_from_slice(body);

    // HTTP sinks.
    let shared = classify(status, &headers, &body);
    assert_eq!(shared.is_ok(), status.is_success());
    check(loki::outcome(status, &headers, &body));
    check(otlp::http_outcome(status, &headers, body.clone()));
    check(otlp::exporter::http_json_outcome(status, &headers, body.clone()));

    // OTLP/gRPC, as the client reads an answer: a status in the headers or
    // trailers, else the response message; through the sink's guard.
    let answer = async {
        match tonic::Status::from_header_map(&headers) {
            Some(status) => Err(status),
            None => ExportLogsServiceResponse::decode(body.clone())
                .map_err(|e| tonic::Status::internal(e.to_string())),
        }
    };
    check(now_or_never(otlp::guarded_export(answer)));
    let code = i32::from(u16::from_le_bytes([head[0], head[1]]));
    let message = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    check(otlp::grpc_outcome(Err(tonic::Status::new(tonic::Code::from(code), message))));

    // Retry-After → the retry policy (only configurations start-up accepts).
    if retry_cfg.validate("fuzz").is_err() {
        return;
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    for v in headers.get_all(hyper::header::RETRY_AFTER) {
        let Ok(v) = v.to_str() else { continue };
        let after = parse_retry_after(v, now);
        let (delay, _at) = retry_cfg.retry_at(tokio::time::Instant::now(), retry.max(1), after, rand01);
        assert!(delay <= MAX_RETRY_WAIT);
        if let Some(a) = after {
            assert!(delay <= a, "Retry-After is honoured up to its cap, never stretched");
        }
    }
    let (_, _) = retry_cfg.retry_at(tokio::time::Instant::now(), retry.max(1), None, rand01);
});
