//! `podwatch events`: attach to a running agent's `/events` stream and print
//! each event as JSON or as one compact line.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    outputs::view::{compact, EventFilter},
    pipeline::event::Event,
};

pub async fn follow(server: &str, filter: &EventFilter, compact_view: bool) -> anyhow::Result<()> {
    let stream = TcpStream::connect(server).await.with_context(|| {
        format!("connecting to the agent at {server} (is `podwatch run` running? see --server)")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let uri = format!("/events?{}", filter.to_query());
    let req = Request::get(uri).header("host", server).body(Empty::<bytes::Bytes>::new())?;
    let mut resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        bail!("agent answered {}", String::from_utf8_lossy(&body).trim());
    }
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    while let Some(frame) = resp.body_mut().frame().await {
        let frame = frame.context("reading the event stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        let mut out = stdout.lock();
        while let Some(pos) = pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if compact_view {
                match serde_json::from_slice::<Event>(&line) {
                    Ok(ev) => writeln!(out, "{}", compact(&ev))?,
                    Err(e) => eprintln!("skipping an event that does not parse: {e}"),
                }
            } else {
                out.write_all(&line)?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
