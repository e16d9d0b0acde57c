//! Where the API server is and how to authenticate: kube-rs's own
//! kubeconfig and in-cluster loading, so podwatch authenticates as kubectl
//! does (client certificates, bearer tokens and token files, exec credential
//! plugins, OIDC `auth-provider` tokens refreshed from their issuer,
//! `tls-server-name`). Token files are the exception ([`super::token_file`]).
//!
//! TLS is kube-rs's too, not `crate::tls`: the kubeconfig (or the service
//! account's `ca.crt`) says which CA to trust and which client certificate to
//! present, and kube-rs also handles what a rustls config handed in from
//! outside could not: client certificates returned by exec plugins, the
//! in-cluster CA re-read when it rotates, `insecure-skip-tls-verify`. Without
//! a CA in the kubeconfig it trusts the system's roots through
//! rustls-platform-verifier (rustls-native-certs on Linux, which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), as `crate::tls::system_roots` does for
//! the sinks. rustls runs on the ring provider (aws-lc would need cmake).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use hyper::{
    header::{HeaderValue, USER_AGENT},
    Uri,
};
use kube::{
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::{token_file::TokenFileLayer, KubeConfig};

/// The kubeconfig, the URL override alone, in-cluster, then what kubectl
/// would use (`$KUBECONFIG`, `~/.kube/config`).
pub async fn config(cfg: &KubeConfig) -> anyhow::Result<kube::Config> {
    let mut config = if let Some(path) = &cfg.kubeconfig {
        let kubeconfig = read_kubeconfig(path)?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?
    } else if let Some(server) = &cfg.api_server {
        kube::Config::new(parse_url(server)?)
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        kube::Config::incluster().context("in-cluster service account")?
    } else {
        kube::Config::infer().await.context(
            "no Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST unset) and no kubeconfig found",
        )?
    };
    // The override keeps the kubeconfig's credentials and TLS settings.
    if let Some(server) = &cfg.api_server {
        config.cluster_url = parse_url(server)?;
    }
    config.connect_timeout = Some(cfg.request_timeout);
    // One backoff: the watcher's. kube-rs's client-level retry of 429/503/504
    // would add a second, invisible one under it.
    config.default_retry = false;
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(concat!("podwatch/", env!("CARGO_PKG_VERSION")))));
    Ok(config)
}

/// Builds the client once: its connection pool, token caches and exec
/// plugin state then live for the agent's lifetime, across every re-list.
pub async fn client(cfg: &KubeConfig) -> anyhow::Result<kube::Client> {
    let mut config = config(cfg).await?;
    let token_file = take_token_file(&mut config);
    let builder = ClientBuilder::try_from(config).context("building the Kubernetes client")?;
    Ok(match token_file {
        Some(path) => builder.with_layer(&TokenFileLayer::new(path)).build(),
        None => builder.build(),
    })
}

/// The token file kube-rs would use, taken over by [`TokenFileLayer`]: only
/// when it is the credential kube-rs would pick (it prefers an
/// auth-provider, a username and password or an inline token, and an exec
/// plugin comes after it).
fn take_token_file(config: &mut kube::Config) -> Option<PathBuf> {
    let a = &mut config.auth_info;
    if a.auth_provider.is_some() || a.username.is_some() || a.token.is_some() || a.exec.is_some() {
        return None;
    }
    a.token_file.take().map(PathBuf::from)
}

/// A kubeconfig path, or a `$KUBECONFIG`-style list of them (`:`-separated,
/// merged first-wins, as kubectl merges them). Relative file names inside
/// each are relative to that file's directory.
fn read_kubeconfig(path: &Path) -> anyhow::Result<Kubeconfig> {
    let mut merged: Option<Kubeconfig> = None;
    for p in std::env::split_paths(path.as_os_str()).filter(|p| !p.as_os_str().is_empty()) {
        let one = Kubeconfig::read_from(&p).with_context(|| format!("reading kubeconfig {}", p.display()))?;
        merged = Some(match merged {
            None => one,
            Some(m) => m.merge(one).with_context(|| format!("merging kubeconfig {}", p.display()))?,
        });
    }
    merged.ok_or_else(|| anyhow!("empty kubeconfig path"))
}

fn parse_url(server: &str) -> anyhow::Result<Uri> {
    let uri: Uri = server.parse().with_context(|| format!("API server URL {server:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(anyhow!("API server URL {server:?}: expected http(s)://host[:port]")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: prod
contexts:
- name: dev
  context: {cluster: dev, user: dev}
- name: prod
  context: {cluster: prod, user: admin, namespace: kube-system}
clusters:
- name: dev
  cluster: {server: "http://127.0.0.1:1"}
- name: prod
  cluster:
    server: https://10.0.0.1:6443/k8s/clusters/c-1/
    tls-server-name: kubernetes
users:
- name: dev
  user: {}
- name: admin
  user:
    tokenFile: token
"#;

    #[tokio::test]
    async fn kubeconfig_current_context_and_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let cfg = KubeConfig {
            kubeconfig: Some(path.clone()),
            request_timeout: Duration::from_secs(7),
            ..KubeConfig::new("n")
        };
        let c = config(&cfg).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "https://10.0.0.1:6443/k8s/clusters/c-1/");
        assert_eq!(c.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(c.auth_info.token_file.as_deref(), dir.path().join("token").to_str(), "made absolute");
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));
        assert!(!c.default_retry);

        // The override changes the URL and keeps the credentials.
        let cfg = KubeConfig { api_server: Some("http://127.0.0.1:8001".into()), ..cfg };
        let c = config(&cfg).await.unwrap();
        assert_eq!(c.cluster_url.to_string(), "http://127.0.0.1:8001/");
        assert!(c.auth_info.token_file.is_some());
        let mut c = c;
        assert_eq!(take_token_file(&mut c), Some(dir.path().join("token")));
        assert!(c.auth_info.token_file.is_none(), "ours, not kube-rs's too");

        // A $KUBECONFIG-style list: the first file's current-context wins.
        let other = dir.path().join("other");
        std::fs::write(&other, "apiVersion: v1\nkind: Config\ncurrent-context: dev\n").unwrap();
        let list = std::env::join_paths([&path, &other]).unwrap();
        let cfg = KubeConfig { kubeconfig: Some(list.into()), api_server: None, ..cfg };
        assert_eq!(
            config(&cfg).await.unwrap().cluster_url.to_string(),
            "https://10.0.0.1:6443/k8s/clusters/c-1/"
        );
    }

    #[tokio::test]
    async fn bad_settings_say_what() {
        let err = |cfg: KubeConfig| async move { format!("{:#}", config(&cfg).await.unwrap_err()) };
        let e =
            err(KubeConfig { kubeconfig: Some("/nonexistent/kubeconfig".into()), ..KubeConfig::new("n") })
                .await;
        assert!(e.contains("/nonexistent/kubeconfig"), "{e}");
        let e = err(KubeConfig { api_server: Some("ftp://x".into()), ..KubeConfig::new("n") }).await;
        assert!(e.contains("expected http(s)"), "{e}");
    }
}
