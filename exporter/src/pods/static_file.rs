//! Static file pod source: pod metadata from a YAML or JSON file, for hosts
//! without an API server (edge nodes, plain container hosts) and for tests.
//!
//! Two shapes are accepted, whichever is handier to write or generate:
//!
//! ```yaml
//! # a list of pods
//! - uid: 6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b
//!   namespace: shop
//!   name: web-7d9f-abcde
//!   labels: {app: web}
//!   workload: {kind: Deployment, name: web}
//!   containers: [{id: 4f2b..., name: app}]
//! # or a map uid → pod
//! 6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b:
//!   namespace: shop
//!   name: web-7d9f-abcde
//! ```
//!
//! JSON is read by the same YAML parser. Unknown keys are rejected, so a
//! typo (`lables`) is an error naming the file, the field and its line,
//! not silently missing labels.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use tracing::{info, warn};

use super::{ContainerMeta, PodMeta, PodStore, Workload};

/// One pod as written in the file; `uid` is the key in the map shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePod {
    #[serde(default)]
    uid: Option<String>,
    namespace: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    workload: Option<FileWorkload>,
    #[serde(default)]
    containers: Vec<FileContainer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkload {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContainer {
    /// With or without the runtime's `containerd://` style prefix.
    id: String,
    name: String,
}

impl FilePod {
    fn into_meta(self, uid: String) -> PodMeta {
        PodMeta {
            uid,
            namespace: self.namespace,
            name: self.name,
            labels: self.labels,
            workload: self.workload.map(|w| Workload { kind: w.kind, name: w.name }),
            containers: self
                .containers
                .into_iter()
                .map(|c| ContainerMeta {
                    id: c.id.split_once("://").map_or(c.id.as_str(), |(_, id)| id).to_owned(),
                    name: c.name,
                })
                .collect(),
        }
    }
}

/// Reads and validates the file; errors name it, and the field and line
/// where the parser gives them.
pub fn load(path: &Path) -> anyhow::Result<Vec<PodMeta>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading pod metadata file {}", path.display()))?;
    parse(&text).with_context(|| format!("pod metadata file {}", path.display()))
}

/// The shape is told by the top-level node, then the text is parsed again
/// as that shape so errors keep their line and column.
pub fn parse(text: &str) -> anyhow::Result<Vec<PodMeta>> {
    let top: serde_yaml::Value = serde_yaml::from_str(text)?;
    let pods = match top {
        serde_yaml::Value::Null => Vec::new(),
        serde_yaml::Value::Sequence(_) => {
            let list: Vec<FilePod> = serde_yaml::from_str(text)?;
            list.into_iter()
                .enumerate()
                .map(|(i, p)| match p.uid.clone().filter(|u| !u.is_empty()) {
                    Some(uid) => Ok(p.into_meta(uid)),
                    None => bail!("[{i}] ({}/{}): missing or empty field `uid`", p.namespace, p.name),
                })
                .collect::<anyhow::Result<_>>()?
        }
        serde_yaml::Value::Mapping(_) => {
            let map: BTreeMap<String, FilePod> = serde_yaml::from_str(text)?;
            map.into_iter()
                .map(|(uid, p)| match &p.uid {
                    Some(u) if *u != uid => {
                        bail!("{uid}: field `uid` is {u:?}, not the key it is listed under")
                    }
                    _ if uid.is_empty() => bail!("a pod is listed under an empty uid"),
                    _ => Ok(p.into_meta(uid)),
                })
                .collect::<anyhow::Result<_>>()?
        }
        _ => bail!("expected a list of pods or a map from pod uid to pod"),
    };
    let mut seen = HashSet::new();
    for p in &pods {
        if !seen.insert(p.uid.as_str()) {
            bail!("pod uid {} appears more than once", p.uid);
        }
    }
    Ok(pods)
}

/// What tells us the file changed: replaced (inode), rewritten (mtime,
/// ctime, length), or unreadable (the error, so it is reported once).
#[derive(Debug, PartialEq, Eq)]
enum Stamp {
    File { len: u64, modified: Option<SystemTime>, ino: u64, ctime: (i64, i64) },
    Unreadable(String),
}

async fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    match tokio::fs::metadata(path).await {
        Ok(m) => Stamp::File {
            len: m.len(),
            modified: m.modified().ok(),
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
        },
        Err(e) => Stamp::Unreadable(e.kind().to_string()),
    }
}

/// Loads `path` into `store`, then reloads it whenever it changes (checked
/// every `poll`). A bad version is counted and logged, and the previous pods
/// stay: a half-edited file must not make every pod unknown. Runs until the
/// task is dropped or aborted.
pub async fn run(path: PathBuf, store: Arc<PodStore>, poll: Duration) {
    let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<Stamp> = None;
    loop {
        ticker.tick().await;
        let now = stamp(&path).await;
        if seen.as_ref() == Some(&now) {
            continue;
        }
        seen = Some(now);
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&p))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("loading {}: {e}", path.display())));
        apply(&store, loaded);
    }
}

fn apply(store: &PodStore, loaded: anyhow::Result<Vec<PodMeta>>) {
    match loaded {
        Ok(pods) => {
            let count = pods.len();
            store.replace_all(pods, Instant::now());
            store.set_synced();
            store.state.relists.fetch_add(1, Relaxed);
            info!(pods = count, "pod metadata file loaded");
        }
        Err(e) => {
            store.state.errors.fetch_add(1, Relaxed);
            warn!("{e:#}; keeping the previous pods");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn list_shape() {
        let pods = parse(
            "- uid: u1\n  namespace: shop\n  name: web-1\n  labels: {app: web}\n  workload: {kind: Deployment, name: web}\n  containers:\n  - {id: 'containerd://abc', name: app}\n- {uid: u2, namespace: default, name: bare}\n",
        )
        .unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].workload, Some(Workload { kind: "Deployment".into(), name: "web".into() }));
        assert_eq!(pods[0].container_name("abc"), Some("app"));
        assert_eq!(pods[0].labels.get("app").map(String::as_str), Some("web"));
        assert!(pods[1].containers.is_empty() && pods[1].workload.is_none());
    }

    #[test]
    fn map_shape_in_json() {
        let pods = parse(
            r#"{"u1": {"namespace": "shop", "name": "web-1", "containers": [{"id": "abc", "name": "app"}]},
                "u2": {"uid": "u2", "namespace": "db", "name": "pg-0", "workload": {"kind": "StatefulSet", "name": "pg"}}}"#,
        )
        .unwrap();
        assert_eq!(pods.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(), ["u1", "u2"]);
        assert_eq!(pods[1].workload.as_ref().map(|w| w.kind.as_str()), Some("StatefulSet"));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing yet\n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let e = err("- uid: u1\n  namespace: shop\n  name: web\n  lables: {app: web}\n");
        assert!(e.contains("unknown field `lables`") && e.contains("line 4"), "{e}");
        let e = err("- uid: u1\n  namespace: shop\n");
        assert!(e.contains("missing field `name`") && e.contains("line 1"), "{e}");
        let e = err("u1:\n  namespace: shop\n  name: web\n  containers:\n  - {id: abc}\n");
        assert!(e.contains("missing field `name`") && e.contains("line 5"), "{e}");
        let e = err("- {namespace: shop, name: web}\n");
        assert!(e.contains("[0] (shop/web): missing or empty field `uid`"), "{e}");
        let e = err("u1: {uid: u9, namespace: a, name: b}\n");
        assert!(e.contains("not the key"), "{e}");
        let e = err("- {uid: u1, namespace: a, name: b}\n- {uid: u1, namespace: a, name: c}\n");
        assert!(e.contains("u1 appears more than once"), "{e}");
        assert!(err("42").contains("expected a list of pods or a map"));
        let e = err("{\"u1\": {\"namespace\": \"a\", \"name\": [5]}}");
        assert!(e.contains("invalid type") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.yaml");
        assert!(format!("{:#}", load(&path).unwrap_err()).contains("pods.yaml"));
        std::fs::write(&path, "- uid: u1\n  namespace: a\n").unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("pods.yaml") && e.contains("missing field `name`"), "{e}");
    }

    /// Polls `f` until true; panics after 5 s so a broken reload cannot hang the suite.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn run_reloads_on_change_and_keeps_pods_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.yaml");
        std::fs::write(&path, "- {uid: u1, namespace: a, name: one}\n").unwrap();
        let store = Arc::new(PodStore::new("file"));
        let task = tokio::spawn(run(path.clone(), store.clone(), Duration::from_millis(10)));
        eventually("first load", || store.synced() && store.get("u1").is_some()).await;

        std::fs::write(&path, "- {uid: u1, namespace: a, name: one, bogus: 1}\n").unwrap();
        eventually("the bad version counted", || store.state.errors.load(Relaxed) == 1).await;
        assert!(!store.is_deleted("u1"), "a bad file must keep the previous pods");

        std::fs::write(&path, "- {uid: u2, namespace: a, name: two}\n").unwrap();
        eventually("the fixed version", || store.get("u2").is_some()).await;
        assert!(store.is_deleted("u1"));
        assert_eq!(store.state.errors.load(Relaxed), 1);
        assert_eq!(store.state.relists.load(Relaxed), 2);

        std::fs::remove_file(&path).unwrap();
        eventually("the missing file counted", || store.state.errors.load(Relaxed) == 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.state.errors.load(Relaxed), 2, "an unchanged problem is reported once");
        assert!(store.get("u2").is_some_and(|_| !store.is_deleted("u2")));
        task.abort();
    }
}
