//! The live event stream behind `GET /events` (what `podwatch events` reads):
//! every subscriber reads the same bounded broadcast ring; one that falls
//! behind skips what it missed and the skip is counted, so a slow viewer can
//! never hold events back from the others or from the reader.

use std::{
    convert::Infallible,
    sync::{atomic::Ordering::Relaxed, Arc},
};

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::broadcast;

use crate::{outputs::view::EventFilter, pipeline::event::Event, telemetry::stats::AgentStats};

/// The stream's frames: one JSON line per event that passes `filter`.
pub fn subscribe(
    events: &broadcast::Sender<Arc<Event>>,
    filter: EventFilter,
    stats: Arc<AgentStats>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let rx = events.subscribe();
    futures_util::stream::unfold((rx, filter, stats), |(mut rx, filter, stats)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if !filter.matches(&ev) {
                        continue;
                    }
                    // The bytes every other output writes: no encoding per subscriber.
                    let Some(line) = ev.json_line() else { continue };
                    return Some((Ok(Frame::data(line.clone())), (rx, filter, stats)));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    stats.stream_lagged.fetch_add(n, Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
