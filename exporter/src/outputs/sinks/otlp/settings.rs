//! The OTLP sink's effective settings: podwatch's YAML first, then the
//! standard `OTEL_*` environment variables every OpenTelemetry exporter
//! reads, then the spec's defaults.
//!
//! Resolution is a pure function of the YAML and an environment lookup, so
//! each variable is tested without touching the process environment, and a
//! malformed value is a start-up error naming the variable (the exporter
//! crate's own env reading ignores such values with a log line: an auth
//! header silently missing is worse than an agent refusing to start).
//!
//! Precedence, per setting: YAML, then `OTEL_EXPORTER_OTLP_LOGS_*`, then
//! `OTEL_EXPORTER_OTLP_*`. Headers and resource attributes merge key by key
//! in that order (YAML wins on a key both set).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{anyhow, bail};
use hyper::header::{HeaderName, HeaderValue};

use super::{OtlpConfig, OtlpProtocol};
use crate::outputs::sinks::http::TlsConfig;

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// What the sink runs with, every source applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub protocol: OtlpProtocol,
    /// gRPC: the server's URL. HTTP: the full URL posted to.
    pub url: String,
    /// Lower-case names (gRPC metadata needs them so; HTTP does not care).
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    pub timeout: Duration,
    pub tls: TlsConfig,
    /// Resource attributes in order: built-in, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_SERVICE_NAME`, YAML (later keys replace earlier ones).
    pub resource: Vec<(String, String)>,
}

/// The OTel spec's default when neither YAML nor environment says.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// An environment lookup; empty values count as unset, as the spec says.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.trim().is_empty())
    }
}

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// No environment: the YAML and defaults only.
pub fn no_env(_: &str) -> Option<String> {
    None
}

/// The logs-specific variable when set, else the generic one; with the name
/// that was used, for error messages.
fn pick(env: &dyn Env, suffix: &str) -> Option<(String, String)> {
    [format!("OTEL_EXPORTER_OTLP_LOGS_{suffix}"), format!("OTEL_EXPORTER_OTLP_{suffix}")]
        .into_iter()
        .find_map(|name| env.get(&name).map(|v| (name, v)))
}

pub fn resolve(cfg: &OtlpConfig, env: &dyn Env, node: &str) -> anyhow::Result<Settings> {
    let protocol = match cfg.protocol {
        Some(p) => p,
        None => match pick(env, "PROTOCOL") {
            Some((name, v)) => parse_protocol(&v)
                .ok_or_else(|| anyhow!("{name}={v:?}: expected grpc, http/protobuf or http/json"))?,
            // podwatch's default before the OTEL_* settings existed; an
            // endpoint-only YAML keeps meaning gRPC.
            None => OtlpProtocol::Grpc,
        },
    };
    let http = protocol != OtlpProtocol::Grpc;
    let (source, url) = match (
        &cfg.endpoint,
        env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(e), _, _) if http => ("sinks.otlp.endpoint", with_logs_path(e)),
        (Some(e), _, _) => ("sinks.otlp.endpoint", e.clone()),
        // The signal-specific URL is used exactly as given (spec).
        (None, Some(e), _) => ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", e),
        (None, None, Some(e)) if http => ("OTEL_EXPORTER_OTLP_ENDPOINT", append_logs_path(&e)),
        (None, None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
        (None, None, None) if http => ("default endpoint", "http://localhost:4318/v1/logs".to_owned()),
        (None, None, None) => ("default endpoint", "http://localhost:4317".to_owned()),
    };
    check_url(&url, source)?;

    let mut headers = BTreeMap::new();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS"] {
        if let Some(v) = env.get(name) {
            for (k, v) in parse_pairs(&v).map_err(|e| anyhow!("{name}: {e}"))? {
                headers.insert(k.to_ascii_lowercase(), v);
            }
        }
    }
    for (k, v) in &cfg.headers {
        headers.insert(k.to_ascii_lowercase(), v.clone());
    }
    for (k, v) in &headers {
        HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| anyhow!("otlp header {k:?}: not a valid header name"))?;
        HeaderValue::from_str(v).map_err(|_| anyhow!("otlp header {k}: not a valid header value"))?;
    }

    let compression = match cfg.compression {
        Some(c) => c,
        None => match pick(env, "COMPRESSION") {
            Some((name, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => bail!("{name}={v:?}: expected gzip or none"),
            },
            None => Compression::None,
        },
    };

    let timeout = match cfg.retry.request_timeout_ms {
        Some(ms) => Duration::from_millis(ms),
        None => match pick(env, "TIMEOUT") {
            Some((name, v)) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => bail!("{name}={v:?}: expected a positive number of milliseconds"),
            },
            None => DEFAULT_TIMEOUT,
        },
    };

    let yaml_tls = cfg.tls.clone().unwrap_or_default();
    let file = |suffix: &str| pick(env, suffix).map(|(_, v)| PathBuf::from(v));
    let tls = TlsConfig {
        ca_file: yaml_tls.ca_file.or_else(|| file("CERTIFICATE")),
        cert_file: yaml_tls.cert_file.or_else(|| file("CLIENT_CERTIFICATE")),
        key_file: yaml_tls.key_file.or_else(|| file("CLIENT_KEY")),
        server_name: yaml_tls.server_name,
    };

    let resource = resource(cfg, env, node)?;
    Ok(Settings { protocol, url, headers, compression, timeout, tls, resource })
}

/// Resource attributes: built-in, then `OTEL_RESOURCE_ATTRIBUTES`, then
/// `OTEL_SERVICE_NAME` (the spec ranks it above `service.name` there), then
/// the YAML's `resource_attributes`.
pub fn resource(cfg: &OtlpConfig, env: &dyn Env, node: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut resource: Vec<(String, String)> = vec![
        ("service.name".into(), "podwatch".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("host.name".into(), node.into()),
        ("k8s.node.name".into(), node.into()),
    ];
    let mut set = |k: String, v: String| {
        resource.retain(|(key, _)| *key != k);
        resource.push((k, v));
    };
    if let Some(v) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in parse_pairs(&v).map_err(|e| anyhow!("OTEL_RESOURCE_ATTRIBUTES: {e}"))? {
            set(k, v);
        }
    }
    if let Some(v) = env.get("OTEL_SERVICE_NAME") {
        set("service.name".into(), v.trim().to_owned());
    }
    for (k, v) in &cfg.resource_attributes {
        set(k.clone(), v.clone());
    }

    Ok(resource)
}

fn parse_protocol(v: &str) -> Option<OtlpProtocol> {
    match v.trim() {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        "http/json" => Some(OtlpProtocol::HttpJson),
        _ => None,
    }
}

/// YAML endpoints keep podwatch's rule: `/v1/logs` unless already there.
fn with_logs_path(e: &str) -> String {
    let e = e.trim_end_matches('/');
    if e.ends_with("/v1/logs") {
        e.to_owned()
    } else {
        format!("{e}/v1/logs")
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL: the signal path is appended
/// relative to it, whatever it already holds (spec).
fn append_logs_path(e: &str) -> String {
    format!("{}/v1/logs", e.trim_end_matches('/'))
}

fn check_url(url: &str, what: &str) -> anyhow::Result<()> {
    let uri: hyper::Uri = url.parse().map_err(|e| anyhow!("{what} {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("{what} {url:?}: scheme must be http or https"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("{what} {url:?}: no host");
    }
    Ok(())
}

/// The spec's `key1=value1,key2=value2` list (W3C Baggage without
/// properties), keys and values percent-decoded and trimmed.
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').ok_or_else(|| format!("{:?} is not key=value", item.trim()))?;
        let k = percent_decode(k.trim())?;
        if k.is_empty() {
            return Err(format!("{:?} has an empty key", item.trim()));
        }
        out.push((k, percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?}: bad percent-encoding"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> OtlpConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    fn with(yaml: &str, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        resolve(&cfg(yaml), &env(vars), "node-1")
    }

    #[test]
    fn defaults_are_the_spec_s_and_podwatch_s() {
        let s = with("{}", &[]).unwrap();
        assert_eq!((s.protocol, s.url.as_str()), (OtlpProtocol::Grpc, "http://localhost:4317"));
        assert_eq!((s.compression, s.timeout), (Compression::None, Duration::from_secs(10)));
        let s = with("protocol: http/protobuf", &[]).unwrap();
        assert_eq!(s.url, "http://localhost:4318/v1/logs");
        assert_eq!(s.resource[0], ("service.name".into(), "podwatch".into()));
    }

    #[test]
    fn endpoints_signal_specific_as_given_generic_gets_the_path_yaml_wins() {
        let generic = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")];
        assert_eq!(with("protocol: http", &generic).unwrap().url, "http://c:4318/base/v1/logs");
        assert_eq!(with("protocol: grpc", &generic).unwrap().url, "http://c:4318/base/");
        let both = [generic[0], ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://c:4318/custom/ingest")];
        assert_eq!(with("protocol: http", &both).unwrap().url, "https://c:4318/custom/ingest");
        assert_eq!(
            with("{protocol: http, endpoint: 'http://y:1'}", &both).unwrap().url,
            "http://y:1/v1/logs"
        );
        let e = with("{}", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
    }

    #[test]
    fn protocol_from_env_and_its_errors() {
        let p = |v| with("{}", &[("OTEL_EXPORTER_OTLP_PROTOCOL", v)]).map(|s| s.protocol);
        assert_eq!(p("http/json").unwrap(), OtlpProtocol::HttpJson);
        assert_eq!(p("http/protobuf").unwrap(), OtlpProtocol::HttpProtobuf);
        assert_eq!(p("grpc").unwrap(), OtlpProtocol::Grpc);
        let e = p("thrift").unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.contains("http/json"), "{e}");
        let logs =
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")];
        assert_eq!(with("{}", &logs).unwrap().protocol, OtlpProtocol::HttpJson);
        assert_eq!(with("protocol: grpc", &logs).unwrap().protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn headers_merge_key_by_key_and_are_percent_decoded() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20dTpw, x-team = ops ,x-a=1"),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-a=2"),
        ];
        let h = with("headers: {X-Team: sec}", &vars).unwrap().headers;
        let want: BTreeMap<String, String> =
            [("authorization", "Basic dTpw"), ("x-team", "sec"), ("x-a", "2")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
        assert_eq!(h, want);
        for bad in ["novalue", "=v", "k=%zz", "bad key=v"] {
            let e = with("{}", &[("OTEL_EXPORTER_OTLP_HEADERS", bad)]).unwrap_err();
            assert!(e.to_string().to_lowercase().contains("header"), "{bad}: {e}");
        }
    }

    #[test]
    fn compression_and_timeout() {
        let c = |v| with("{}", &[("OTEL_EXPORTER_OTLP_COMPRESSION", v)]).map(|s| s.compression);
        assert_eq!(c("gzip").unwrap(), Compression::Gzip);
        assert_eq!(c("none").unwrap(), Compression::None);
        assert!(c("zstd").unwrap_err().to_string().contains("OTEL_EXPORTER_OTLP_COMPRESSION"));
        let logs =
            [("OTEL_EXPORTER_OTLP_COMPRESSION", "none"), ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip")];
        assert_eq!(with("{}", &logs).unwrap().compression, Compression::Gzip);
        assert_eq!(with("compression: none", &logs).unwrap().compression, Compression::None);

        let t = |v| with("{}", &[("OTEL_EXPORTER_OTLP_TIMEOUT", v)]).map(|s| s.timeout);
        assert_eq!(t("2500").unwrap(), Duration::from_millis(2500));
        for bad in ["2.5s", "-1", "0"] {
            assert!(t(bad).unwrap_err().to_string().contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{bad}");
        }
        let yaml = with("retry: {request_timeout_ms: 700}", &[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")]);
        assert_eq!(yaml.unwrap().timeout, Duration::from_millis(700));
    }

    #[test]
    fn tls_files_from_env_unless_yaml_names_them() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/env/cert.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/env/key.pem"),
        ];
        let t = with("{}", &vars).unwrap().tls;
        assert_eq!(t.ca_file, Some("/env/ca.pem".into()));
        assert_eq!(t.cert_file, Some("/env/cert.pem".into()));
        assert_eq!(t.key_file, Some("/env/key.pem".into()));
        let t = with("tls: {ca_file: /yaml/ca.pem}", &vars).unwrap().tls;
        assert_eq!(t.ca_file, Some("/yaml/ca.pem".into()));
    }

    #[test]
    fn resource_attributes_and_service_name() {
        let vars = [
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod,service.name=from-attrs,team=a%2Cb"),
            ("OTEL_SERVICE_NAME", "podwatch-prod"),
        ];
        let r: BTreeMap<_, _> =
            with("resource_attributes: {team: sec}", &vars).unwrap().resource.into_iter().collect();
        assert_eq!(r["service.name"], "podwatch-prod");
        assert_eq!(r["k8s.cluster.name"], "prod");
        assert_eq!(r["team"], "sec");
        assert_eq!(r["host.name"], "node-1");
        let e = with("{}", &[("OTEL_RESOURCE_ATTRIBUTES", "oops")]).unwrap_err();
        assert!(e.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"), "{e}");
    }
}
