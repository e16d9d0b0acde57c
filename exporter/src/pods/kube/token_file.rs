//! Bearer tokens from a file (the service account's projected token,
//! kubeconfig `tokenFile`), read for every request.
//!
//! kube-rs 5 has its own token-file source, but it sends the file's bytes
//! as they are (a token file written with a trailing newline then fails
//! every request: a header value cannot hold one; client-go trims it), and it
//! re-reads the file only once a minute. Reading a small file per request
//! costs nothing next to the request (a list, a watch, an owner lookup: a
//! handful a minute), and a rotated token is used from the next request on.
//! If the file cannot be read, the request fails and is counted and retried
//! like any other.

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper::{
    header::{HeaderValue, AUTHORIZATION},
    Request,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds `Authorization: Bearer <token read from path>` to every request.
#[derive(Clone)]
pub struct TokenFileLayer {
    path: Arc<PathBuf>,
}

impl TokenFileLayer {
    pub fn new(path: PathBuf) -> TokenFileLayer {
        TokenFileLayer { path: Arc::new(path) }
    }
}

impl<S> tower::Layer<S> for TokenFileLayer {
    type Service = TokenFile<S>;

    fn layer(&self, inner: S) -> TokenFile<S> {
        TokenFile { inner, path: self.path.clone() }
    }
}

pub struct TokenFile<S> {
    inner: S,
    path: Arc<PathBuf>,
}

impl<S, B> tower::Service<Request<B>> for TokenFile<S>
where
    S: tower::Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match bearer(&self.path) {
            Ok(value) => {
                req.headers_mut().insert(AUTHORIZATION, value);
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// `Bearer <token>` from the file, surrounding whitespace trimmed.
fn bearer(path: &Path) -> Result<HeaderValue, BoxError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| format!("the token in {} has characters not allowed in a header", path.display()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_trimmed_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t1\n").unwrap();
        assert_eq!(bearer(&path).unwrap(), "Bearer t1");
        std::fs::write(&path, "t2").unwrap();
        assert_eq!(bearer(&path).unwrap(), "Bearer t2");
        std::fs::write(&path, "a\nb").unwrap();
        assert!(bearer(&path).unwrap_err().to_string().contains("not allowed in a header"));
        let e = bearer(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("reading the token file"), "{e}");
    }
}
