//! TLS pieces shared by the sinks' clients (HTTP and gRPC): the system's
//! CAs plus configured ones, and PEM certificate parsing. (The Kubernetes
//! client uses kube-rs's own TLS from the kubeconfig: `pods/kube/client.rs`.) rustls with the ring
//! provider throughout (aws-lc would need cmake).

use anyhow::{anyhow, bail};
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// Distribution CA bundles, tried in order when neither `SSL_CERT_FILE` nor
/// `SSL_CERT_DIR` gives a certificate.
const SYSTEM_CA_FILES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The system's trusted CAs, as OpenSSL finds them: `SSL_CERT_FILE` and every
/// certificate file in the `SSL_CERT_DIR` directories (`:`-separated), else
/// the first distribution bundle found. Empty in a distroless image without
/// one (configured CAs are then all there is).
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    system_roots_from(
        std::env::var("SSL_CERT_FILE").ok().as_deref(),
        std::env::var("SSL_CERT_DIR").ok().as_deref(),
    )
}

fn system_roots_from(cert_file: Option<&str>, cert_dirs: Option<&str>) -> Vec<CertificateDer<'static>> {
    let certs_in = |path: &std::path::Path| -> Vec<CertificateDer<'static>> {
        // Unreadable files and non-certificate sections are skipped, as
        // OpenSSL skips them.
        std::fs::read(path)
            .map(|pem| CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    let mut out: Vec<_> = cert_file.map(|f| certs_in(f.as_ref())).unwrap_or_default();
    for dir in cert_dirs.into_iter().flat_map(|d| d.split(':')).filter(|d| !d.is_empty()) {
        let mut files: Vec<_> =
            std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            out.extend(certs_in(f));
        }
    }
    if out.is_empty() {
        out =
            SYSTEM_CA_FILES.iter().map(|f| certs_in(f.as_ref())).find(|c| !c.is_empty()).unwrap_or_default();
    }
    out
}

/// Roots for a client: the system's plus the configured CA (`what` names
/// it in errors); an error when that leaves none.
pub fn root_store(configured_ca: Option<&[u8]>, what: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots());
    if let Some(pem) = configured_ca {
        for cert in parse_certs(pem, what)? {
            roots.add(cert).map_err(|e| anyhow!("{what}: {e}"))?;
        }
    }
    if roots.is_empty() {
        bail!(
            "no CA configured and no system CA found (SSL_CERT_FILE, SSL_CERT_DIR, {})",
            SYSTEM_CA_FILES.join(", ")
        );
    }
    Ok(roots)
}

/// Every certificate in a PEM blob; `what` names it in errors.
pub fn parse_certs(pem: &[u8], what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: {e}"))?;
    if certs.is_empty() {
        bail!("{what}: no PEM certificate found");
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real CA certificate from this machine's bundle (Debian's ca-certificates).
    fn some_ca() -> Vec<u8> {
        let pem = std::fs::read(SYSTEM_CA_FILES[0]).expect("Debian's CA bundle");
        let text = String::from_utf8_lossy(&pem);
        let end = "-----END CERTIFICATE-----";
        let first = &text[..text.find(end).expect("a certificate") + end.len()];
        format!("{first}\n").into_bytes()
    }

    #[test]
    fn ssl_cert_dir_and_file_are_read_as_openssl_reads_them() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("one.pem"), some_ca()).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a certificate").expect("write");
        let other = tempfile::tempdir().expect("tmp");
        std::fs::write(other.path().join("two.crt"), [some_ca(), some_ca()].concat()).expect("write");
        let dirs = format!("{}:{}", dir.path().display(), other.path().display());
        assert_eq!(system_roots_from(None, Some(&dirs)).len(), 3, "every certificate in every directory");
        let file = dir.path().join("one.pem").display().to_string();
        assert_eq!(system_roots_from(Some(&file), None).len(), 1, "SSL_CERT_FILE alone");
        let bundle = system_roots_from(Some("/nonexistent"), Some("/nonexistent"));
        assert!(bundle.len() > 10, "neither variable gives a certificate: the distribution bundle");
    }

    #[test]
    fn a_configured_ca_is_added_to_the_system_roots() {
        let with = root_store(Some(&some_ca()), "tls.ca_file").expect("roots");
        assert_eq!(with.len(), system_roots().len() + 1, "the system's roots and the configured CA");
        let e = root_store(Some(b"garbage"), "tls.ca_file").expect_err("not PEM");
        assert!(e.to_string().contains("tls.ca_file"), "{e}");
    }
}
