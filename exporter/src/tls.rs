//! TLS pieces shared by every client the agent opens (Kubernetes API, sinks):
//! the system CA bundle and PEM certificate parsing. rustls with the ring
//! provider throughout (aws-lc would need cmake).

use anyhow::{anyhow, bail};
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// System CA bundles, tried in order after `SSL_CERT_FILE`.
const SYSTEM_CA_FILES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// The system CA bundle, for when no CA is configured.
pub fn system_ca() -> anyhow::Result<Vec<u8>> {
    let env = std::env::var("SSL_CERT_FILE").ok();
    for f in env.iter().map(String::as_str).chain(SYSTEM_CA_FILES) {
        if let Ok(pem) = std::fs::read(f) {
            return Ok(pem);
        }
    }
    bail!("no CA configured and no system CA bundle found (SSL_CERT_FILE, {})", SYSTEM_CA_FILES.join(", "))
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
