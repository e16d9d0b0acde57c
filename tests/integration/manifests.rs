//! The rendered deployment (deploy/kustomize) as the tests read it: `kubectl
//! kustomize` output parsed into objects, and the few lookups the deploy and
//! image tests share.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_yaml::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn kustomize_dir() -> PathBuf {
    repo().join("deploy/kustomize")
}

/// True when every tool is on PATH (see `harness::missing_tool`).
pub fn tools(names: &[&str]) -> bool {
    names.iter().all(|n| crate::harness::tool_available(n, "the deployment tests need it"))
}

/// `base` and every directory under overlays/, so a new overlay is tested
/// without being listed here.
pub fn variants() -> Vec<String> {
    let mut v = vec!["base".to_owned()];
    let mut overlays: Vec<String> = std::fs::read_dir(kustomize_dir().join("overlays"))
        .expect("deploy/kustomize/overlays")
        .flatten()
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| format!("overlays/{}", e.file_name().to_string_lossy()))
        .collect();
    overlays.sort();
    v.extend(overlays);
    v
}

/// `kubectl kustomize` of a variant: (the YAML text, the objects).
pub fn render(variant: &str) -> (String, Vec<Value>) {
    let dir = kustomize_dir().join(variant);
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {variant} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 manifest");
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "{variant} rendered nothing");
    (text, objects)
}

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// The one object of `kind` (panics when there is not exactly one).
pub fn one<'a>(objects: &'a [Value], k: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| kind(o) == k).collect();
    assert_eq!(found.len(), 1, "expected exactly one {k}, found {}", found.len());
    found[0]
}

pub fn daemonset(objects: &[Value]) -> &Value {
    one(objects, "DaemonSet")
}

pub fn container(ds: &Value) -> &Value {
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(c.is_mapping(), "the DaemonSet has no container");
    c
}

pub fn config_map<'a>(objects: &'a [Value], cm_name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == cm_name)
        .unwrap_or_else(|| panic!("no ConfigMap {cm_name}"))
}

/// (mountPath, volume) of the volume holding ConfigMap `cm_name`.
pub fn config_map_mount(ds: &Value, cm_name: &str) -> String {
    let vols = seq(&ds["spec"]["template"]["spec"]["volumes"]);
    let vol = vols
        .iter()
        .find(|v| str_of(&v["configMap"]["name"]) == cm_name)
        .unwrap_or_else(|| panic!("no volume for ConfigMap {cm_name}"));
    seq(&container(ds)["volumeMounts"])
        .iter()
        .find(|m| m["name"] == vol["name"])
        .map(|m| str_of(&m["mountPath"]).to_owned())
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} is not mounted"))
}

/// The ConfigMap the DaemonSet's `--config` file comes from (generated
/// names carry a hash suffix): the one mounted where `--config` points.
pub fn config_arg(ds: &Value) -> String {
    let args: Vec<String> = seq(&container(ds)["args"]).iter().map(|a| str_of(a).to_owned()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--config=") {
            return v.to_owned();
        }
        if a == "--config" {
            return it.next().cloned().expect("--config value");
        }
    }
    panic!("the DaemonSet passes no --config: {args:?}")
}

/// Writes a ConfigMap's data into `dir` the way kubelet's atomic writer
/// lays out a ConfigMap volume: the files in a timestamped directory,
/// `..data` pointing at it, and each key a symlink through `..data`.
/// Calling it again swaps `..data` atomically, as an update does.
pub fn write_config_map_volume(dir: &Path, cm: &Value, generation: u32) {
    std::fs::create_dir_all(dir).expect("mkdir volume");
    let stamp = format!("..2026_11_23_00_00_00.{generation}");
    let data_dir = dir.join(&stamp);
    std::fs::create_dir_all(&data_dir).expect("mkdir data");
    let data = cm["data"].as_mapping().cloned().unwrap_or_default();
    for (k, v) in &data {
        std::fs::write(data_dir.join(str_of(k)), str_of(v)).expect("write key");
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).expect("symlink");
    std::fs::rename(&tmp_link, dir.join("..data")).expect("swap ..data");
    for (k, _) in &data {
        let link = dir.join(str_of(k));
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(str_of(k)), &link).expect("key symlink");
        }
    }
    // Keys gone from the new data lose their links, the old data directory goes.
    for e in std::fs::read_dir(dir).expect("read volume").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("..20") && n != stamp {
            let _ = std::fs::remove_dir_all(e.path());
        } else if !n.starts_with("..") && !data.contains_key(Value::from(n.as_str())) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
