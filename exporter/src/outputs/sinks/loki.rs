//! Loki sink: `POST /loki/api/v1/push`, protobuf (`logproto.PushRequest`)
//! compressed with snappy's block format (what Promtail and Alloy send), or
//! JSON. A few low-cardinality stream labels (job, node, namespace, kind,
//! action, plus static ones from the config); pod name/uid and container go to
//! structured metadata; the line is the event's JSON. Entries are ordered by
//! time within each stream.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use bytes::Bytes;
use hyper::{header::HeaderValue, HeaderMap, StatusCode};
use prost::Message as _;
use serde::Deserialize;

use super::{
    action_of, event_time_nanos,
    framework::{self, Encoder, QueueConfig, RetryConfig, SendError, Sent, SinkHandle, SinkStats, Transport},
    http::{classify, static_headers, BasicAuth, HttpClient, TlsConfig},
    namespace_of,
};
use crate::pipeline::event::Event;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    /// logproto.PushRequest, snappy-compressed (application/x-protobuf).
    #[default]
    Protobuf,
    /// The push API's JSON form (application/json).
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// `http(s)://host:3100`; `/loki/api/v1/push` is appended when the URL has no path.
    pub url: String,
    #[serde(default)]
    pub encoding: LokiEncoding,
    /// Sent as `X-Scope-OrgID` (multi-tenant Loki).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The `job` label.
    #[serde(default = "default_job")]
    pub job: String,
    /// Static stream labels added to every stream (e.g. `cluster: prod`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod name, pod uid and container name as structured metadata (Loki 3;
    /// turn off for a Loki that rejects it).
    #[serde(default = "yes")]
    pub structured_metadata: bool,
    /// Events whose line is larger are not sent (counted failed). Loki's
    /// default `max_line_size` is 256 KB.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_job() -> String {
    "podwatch".into()
}
fn yes() -> bool {
    true
}
fn default_max_line() -> usize {
    256 * 1024
}

/// The labels every stream gets; static labels may not reuse these names.
const BUILTIN_LABELS: [&str; 5] = ["job", "node", "namespace", "kind", "action"];

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

impl LokiConfig {
    pub fn push_url(&self) -> String {
        let trimmed = self.url.trim_end_matches('/');
        let has_path = trimmed.split_once("://").map(|(_, rest)| rest.contains('/')).unwrap_or(false);
        if has_path {
            self.url.clone()
        } else {
            format!("{trimmed}/loki/api/v1/push")
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for k in self.labels.keys() {
            anyhow::ensure!(valid_label_name(k), "sinks.loki.labels: {k:?} is not a valid Loki label name");
            anyhow::ensure!(
                !BUILTIN_LABELS.contains(&k.as_str()),
                "sinks.loki.labels: {k:?} is set by podwatch itself"
            );
        }
        anyhow::ensure!(self.max_line_bytes > 0, "sinks.loki.max_line_bytes must be > 0");
        self.queue.validate("loki")?;
        self.retry.validate("loki")
    }
}

/// Loki's push protobuf (grafana/loki pkg/push/push.proto, package logproto),
/// written out by hand: same field numbers and types, nothing else.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// google.protobuf.Timestamp
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

pub struct LokiItem {
    labels: Arc<str>,
    pairs: Vec<(&'static str, String)>,
    ts: u64,
    line: String,
    meta: Vec<(&'static str, String)>,
}

pub struct LokiEncoder {
    encoding: LokiEncoding,
    job: String,
    node: String,
    extra: Vec<(String, String)>,
    structured_metadata: bool,
    max_line: usize,
    /// Rendered label sets, reused across events.
    cache: BTreeMap<Vec<String>, Arc<str>>,
}

pub struct LokiPayload {
    pub body: Bytes,
    pub content_type: &'static str,
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl LokiEncoder {
    pub fn new(cfg: &LokiConfig, node: &str) -> LokiEncoder {
        LokiEncoder {
            encoding: cfg.encoding,
            job: cfg.job.clone(),
            node: node.to_owned(),
            extra: cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            structured_metadata: cfg.structured_metadata,
            max_line: cfg.max_line_bytes,
            cache: BTreeMap::new(),
        }
    }

    /// The builtin labels of an event, in name order.
    fn pairs(&self, ev: &Event) -> Vec<(&'static str, String)> {
        let mut p = Vec::with_capacity(5);
        if let Some(a) = action_of(ev) {
            p.push(("action", a.to_owned()));
        }
        p.push(("job", self.job.clone()));
        p.push(("kind", ev.kind.as_str().to_owned()));
        p.push(("namespace", namespace_of(ev).to_owned()));
        // The agent's node name (the event's own `node` is the same node).
        p.push(("node", self.node.clone()));
        p
    }

    fn render(&mut self, pairs: &[(&'static str, String)]) -> Arc<str> {
        let key: Vec<String> = pairs.iter().map(|(_, v)| v.clone()).collect();
        if let Some(s) = self.cache.get(&key) {
            return s.clone();
        }
        let mut all: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.sort();
        let mut s = String::from("{");
        for (i, (k, v)) in all.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(k);
            s.push_str("=\"");
            escape_label_value(v, &mut s);
            s.push('"');
        }
        s.push('}');
        let s: Arc<str> = s.into();
        // Label sets are few (namespaces × kinds); bound the cache anyway.
        if self.cache.len() >= 10_000 {
            self.cache.clear();
        }
        self.cache.insert(key, s.clone());
        s
    }

    fn group(items: Vec<LokiItem>) -> BTreeMap<Arc<str>, Vec<LokiItem>> {
        let mut streams: BTreeMap<Arc<str>, Vec<LokiItem>> = BTreeMap::new();
        for it in items {
            streams.entry(it.labels.clone()).or_default().push(it);
        }
        for entries in streams.values_mut() {
            entries.sort_by_key(|e| e.ts);
        }
        streams
    }
}

impl Encoder for LokiEncoder {
    type Item = LokiItem;
    type Payload = LokiPayload;

    fn prepare(&mut self, ev: &Event) -> Result<(LokiItem, usize), String> {
        let line = ev.json().ok_or("JSON: the event could not be encoded")?.to_owned();
        if line.len() > self.max_line {
            return Err(format!("line of {} bytes is over max_line_bytes {}", line.len(), self.max_line));
        }
        let pairs = self.pairs(ev);
        let labels = self.render(&pairs);
        let mut meta = Vec::new();
        if self.structured_metadata {
            if let Some(p) = &ev.pod {
                if let Some(n) = &p.name {
                    meta.push(("pod", n.clone()));
                }
                meta.push(("pod_uid", p.uid.clone()));
                if let Some(c) = p.container.as_ref().and_then(|c| c.name.clone()) {
                    meta.push(("container", c));
                }
            }
        }
        let size = line.len() + 32 + meta.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
        Ok((LokiItem { labels, pairs, ts: event_time_nanos(ev), line, meta }, size))
    }

    fn encode(&mut self, items: Vec<LokiItem>) -> Result<LokiPayload, String> {
        let streams = Self::group(items);
        match self.encoding {
            LokiEncoding::Protobuf => {
                let req = proto::PushRequest {
                    streams: streams
                        .into_iter()
                        .map(|(labels, entries)| proto::StreamAdapter {
                            labels: labels.to_string(),
                            entries: entries
                                .into_iter()
                                .map(|e| proto::EntryAdapter {
                                    timestamp: Some(proto::Timestamp {
                                        seconds: (e.ts / 1_000_000_000) as i64,
                                        nanos: (e.ts % 1_000_000_000) as i32,
                                    }),
                                    line: e.line,
                                    structured_metadata: e
                                        .meta
                                        .into_iter()
                                        .map(|(k, v)| proto::LabelPairAdapter {
                                            name: k.to_owned(),
                                            value: v,
                                        })
                                        .collect(),
                                })
                                .collect(),
                            hash: 0,
                        })
                        .collect(),
                };
                let raw = req.encode_to_vec();
                let body =
                    snap::raw::Encoder::new().compress_vec(&raw).map_err(|e| format!("snappy: {e}"))?;
                Ok(LokiPayload { body: body.into(), content_type: "application/x-protobuf" })
            }
            LokiEncoding::Json => {
                let streams: Vec<serde_json::Value> = streams
                    .into_values()
                    .map(|entries| {
                        let mut stream = serde_json::Map::new();
                        if let Some(first) = entries.first() {
                            for (k, v) in &first.pairs {
                                stream.insert((*k).to_owned(), v.clone().into());
                            }
                            for (k, v) in &self.extra {
                                stream.insert(k.clone(), v.clone().into());
                            }
                        }
                        let values: Vec<serde_json::Value> = entries
                            .into_iter()
                            .map(|e| {
                                let mut v = vec![e.ts.to_string().into(), e.line.into()];
                                if !e.meta.is_empty() {
                                    let m: serde_json::Map<String, serde_json::Value> =
                                        e.meta.into_iter().map(|(k, v)| (k.to_owned(), v.into())).collect();
                                    v.push(m.into());
                                }
                                serde_json::Value::Array(v)
                            })
                            .collect();
                        serde_json::json!({"stream": stream, "values": values})
                    })
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({ "streams": streams }))
                    .map_err(|e| format!("JSON: {e}"))?;
                Ok(LokiPayload { body: body.into(), content_type: "application/json" })
            }
        }
    }
}

pub struct LokiTransport {
    client: HttpClient,
}

impl Transport for LokiTransport {
    type Payload = LokiPayload;

    async fn send(&mut self, p: &LokiPayload, _events: u64, _s: &Arc<SinkStats>) -> Result<Sent, SendError> {
        let (status, headers, body) = self.client.post(p.content_type, p.body.clone()).await?;
        outcome(status, &headers, &body)
    }
}

/// A push answer → what happened to the batch: Loki accepts or refuses a
/// push whole (its 2xx body carries nothing we read).
pub fn outcome(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Result<Sent, SendError> {
    classify(status, headers, body)?;
    Ok(Sent::All)
}

pub fn start(cfg: &LokiConfig, node: &str) -> anyhow::Result<SinkHandle> {
    cfg.validate()?;
    let mut headers = static_headers(
        "loki",
        cfg.basic_auth.as_ref(),
        cfg.bearer_token.as_deref(),
        cfg.bearer_token_file.as_ref(),
        &cfg.headers,
    )?;
    if let Some(t) = &cfg.tenant {
        let v = HeaderValue::from_str(t).map_err(|_| anyhow::anyhow!("sinks.loki.tenant: invalid value"))?;
        headers.insert("x-scope-orgid", v);
    }
    let client =
        HttpClient::new("loki", &cfg.push_url(), cfg.tls.as_ref(), headers, cfg.retry.request_timeout())?;
    Ok(framework::spawn(
        "loki",
        &cfg.queue,
        &cfg.retry,
        LokiEncoder::new(cfg, node),
        LokiTransport { client },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::sinks::testdata::*;

    fn cfg(yaml: &str) -> LokiConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn decode(p: &LokiPayload) -> proto::PushRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(&p.body).unwrap();
        proto::PushRequest::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn push_url() {
        assert_eq!(cfg("url: http://loki:3100").push_url(), "http://loki:3100/loki/api/v1/push");
        assert_eq!(cfg("url: http://loki:3100/").push_url(), "http://loki:3100/loki/api/v1/push");
        assert_eq!(cfg("url: https://gw/custom/push").push_url(), "https://gw/custom/push");
    }

    #[test]
    fn config_errors() {
        assert!(cfg("{url: x, labels: {kind: a}}").validate().is_err());
        assert!(cfg("{url: x, labels: {9bad: a}}").validate().is_err());
        assert!(cfg("{url: x, labels: {cluster: prod}}").validate().is_ok());
        assert!(serde_yaml::from_str::<LokiConfig>("{url: x, encoding: xml}").is_err());
    }

    #[test]
    fn protobuf_streams_labels_order_and_metadata() {
        let c = cfg("{url: x, labels: {cluster: prod}}");
        let mut enc = LokiEncoder::new(&c, "node-1");
        let evs = [
            exec_in_pod(3, "2026-01-01T00:00:03Z"),
            connect_on_host(9, "2026-01-01T00:00:02Z"),
            exec_in_pod(1, "2026-01-01T00:00:01Z"),
            exec_in_pod(2, "2026-01-01T00:00:02Z"),
        ];
        let items = evs.iter().map(|e| enc.prepare(e).unwrap().0).collect();
        let req = decode(&enc.encode(items).unwrap());
        assert_eq!(req.streams.len(), 2);
        let pod = req.streams.iter().find(|s| s.labels.contains("shop")).unwrap();
        assert_eq!(
            pod.labels,
            r#"{cluster="prod", job="podwatch", kind="exec", namespace="shop", node="node-1"}"#
        );
        let secs: Vec<i64> = pod.entries.iter().map(|e| e.timestamp.as_ref().unwrap().seconds).collect();
        assert_eq!(secs, [1_767_225_601, 1_767_225_602, 1_767_225_603]);
        let line: Event = serde_json::from_str(&pod.entries[0].line).unwrap();
        assert_eq!(line, *evs[2]);
        let meta: Vec<(&str, &str)> =
            pod.entries[0].structured_metadata.iter().map(|m| (m.name.as_str(), m.value.as_str())).collect();
        assert_eq!(
            meta,
            [
                ("pod", "web-7d4b9c-x2x9q"),
                ("pod_uid", "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b"),
                ("container", "nginx")
            ]
        );
        let host = req.streams.iter().find(|s| s.labels.contains("host")).unwrap();
        assert!(host.labels.contains(r#"kind="connect""#));
        assert!(host.entries[0].structured_metadata.is_empty());
        for s in &req.streams {
            assert!(!s.labels.contains("uid") && !s.labels.contains("pid") && !s.labels.contains("path"));
        }
    }

    #[test]
    fn action_becomes_a_label() {
        let c = cfg("url: x");
        let mut enc = LokiEncoder::new(&c, "node-1");
        let mut ev = (*exec_in_pod(1, "2026-01-01T00:00:00Z")).clone();
        ev.action = Some("deny".into());
        let (item, _) = enc.prepare(&ev).unwrap();
        assert_eq!(
            &*item.labels,
            r#"{action="deny", job="podwatch", kind="exec", namespace="shop", node="node-1"}"#
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_value("a\"b\\c\nd", &mut s);
        assert_eq!(s, r#"a\"b\\c\nd"#);
    }

    #[test]
    fn oversized_lines_are_rejected() {
        let c = cfg("{url: x, max_line_bytes: 1000}");
        let mut enc = LokiEncoder::new(&c, "n");
        let big = file_in_pod(1, "2026-01-01T00:00:00Z", &"/a".repeat(600));
        let e = enc.prepare(&big).err().unwrap();
        assert!(e.contains("max_line_bytes"), "{e}");
        assert!(enc.prepare(&exec_in_pod(1, "2026-01-01T00:00:00Z")).is_ok());
    }

    #[test]
    fn json_encoding() {
        let c = cfg("{url: x, encoding: json}");
        let mut enc = LokiEncoder::new(&c, "node-1");
        let items = vec![
            enc.prepare(&exec_in_pod(2, "2026-01-01T00:00:02Z")).unwrap().0,
            enc.prepare(&exec_in_pod(1, "2026-01-01T00:00:01Z")).unwrap().0,
        ];
        let p = enc.encode(items).unwrap();
        assert_eq!(p.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        let s = &v["streams"][0];
        assert_eq!(s["stream"]["namespace"], "shop");
        assert_eq!(s["values"][0][0], "1767225601000000000");
        assert_eq!(s["values"][1][2]["pod"], "web-7d4b9c-x2x9q");
    }
}
