//! Event outputs for people and files: JSON lines on stdout, or in a file that
//! rotates by size. Each runs on its own thread behind a queue of encoded
//! lines bounded in lines and in bytes; a full queue drops (and counts)
//! rather than slowing the ring buffer reader. The byte bound is what keeps
//! the agent's memory flat when the output falls behind (65,536 queued
//! events used to be 100–170 MiB; 8 MiB of lines by default).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::error;

use crate::{pipeline::event::Event, telemetry::stats::AgentStats};

#[derive(Debug, Clone, PartialEq)]
pub enum OutputTarget {
    Stdout,
    File { path: PathBuf, max_bytes: u64, max_files: u32 },
    None,
}

/// JSON lines handed to the output thread together.
type Batch = Vec<Bytes>;

/// What a queued line costs the budget beyond its bytes: the `Bytes`
/// handle and its shared header.
const LINE_OVERHEAD: usize = 64;

/// The reader's end of an output. The reader encodes each event's JSON line
/// as it offers it, while the event is still in its cache (the output
/// thread read every event cold, and freed it across threads); the output
/// thread only writes bytes. Lines offered during one drain of the ring
/// buffer go over as one batch ([`OutputHandle::flush`]): one channel
/// operation and at most one wakeup of the output thread per drain, instead
/// of a futex wake and a context switch per event whenever the output keeps
/// up (what the agent paid at a steady rate: perf showed the two threads
/// trading the CPU event by event).
pub struct OutputHandle {
    tx: Option<mpsc::UnboundedSender<Batch>>,
    pending: Batch,
    budget: Arc<Budget>,
    thread: Option<JoinHandle<()>>,
}

/// What a queue may hold, in events and in bytes: taken when an event is
/// queued, given back once it is written.
#[derive(Debug)]
pub struct Budget {
    events: AtomicUsize,
    bytes: AtomicUsize,
    max_events: usize,
    max_bytes: usize,
}

impl Budget {
    pub fn new(max_events: usize, max_bytes: usize) -> Budget {
        Budget { events: AtomicUsize::new(0), bytes: AtomicUsize::new(0), max_events, max_bytes }
    }

    /// Takes one event of `n` bytes if it fits.
    pub fn take(&self, n: usize) -> bool {
        if self.events.fetch_update(Relaxed, Relaxed, |e| (e < self.max_events).then_some(e + 1)).is_err() {
            return false;
        }
        if self.bytes.fetch_update(Relaxed, Relaxed, |u| (u + n <= self.max_bytes).then_some(u + n)).is_err()
        {
            self.events.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    pub fn give_back(&self, n: usize) {
        self.events.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(n, Relaxed);
    }

    /// (events, bytes) queued.
    pub fn used(&self) -> (usize, usize) {
        (self.events.load(Relaxed), self.bytes.load(Relaxed))
    }
}

impl OutputHandle {
    /// Takes an event's line for the next batch without waiting; a full
    /// queue (in events or in bytes) counts a drop.
    pub fn offer(&mut self, ev: &Event, stats: &AgentStats) {
        if self.tx.is_none() {
            return;
        }
        let Some(line) = ev.json_line() else { return };
        if !self.budget.take(line.len() + LINE_OVERHEAD) {
            stats.output_queue_drops.fetch_add(1, Relaxed);
            return;
        }
        self.pending.push(line.clone());
    }

    /// Hands the events offered since the last flush to the output thread.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let next = Vec::with_capacity(self.pending.len());
        let batch = std::mem::replace(&mut self.pending, next);
        if let Some(Err(mpsc::error::SendError(batch))) = self.tx.as_ref().map(|tx| tx.send(batch)) {
            // The thread is gone (it never exits while the handle lives).
            for line in batch {
                self.budget.give_back(line.len() + LINE_OVERHEAD);
            }
        }
    }

    /// Closes the queue and waits until everything queued is written.
    pub fn finish(mut self) {
        self.flush();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A file that rotates to `path.1 … path.N` once it passes `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: BufWriter<File>,
    written: u64,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile { path, max_bytes, max_files, file: BufWriter::new(file), written })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_files == 0 {
            // No history kept: start the file again.
            self.file = BufWriter::new(File::create(&self.path)?);
            self.written = 0;
            return Ok(());
        }
        let _ = fs::remove_file(self.rotated(self.max_files));
        for n in (1..self.max_files).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        fs::rename(&self.path, self.rotated(1))?;
        self.file = BufWriter::new(File::create(&self.path)?);
        self.written = 0;
        Ok(())
    }

    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Writer {
    Stdout(BufWriter<io::Stdout>),
    File(RotatingFile),
}

impl Writer {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Writer::Stdout(w) => w.write_all(line),
            Writer::File(f) => f.write_line(line),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Writer::Stdout(w) => w.flush(),
            Writer::File(f) => f.flush(),
        }
    }
}

pub fn spawn(
    target: OutputTarget,
    capacity: usize,
    max_bytes: usize,
    stats: Arc<AgentStats>,
) -> io::Result<OutputHandle> {
    let budget = Arc::new(Budget::new(capacity.max(1), max_bytes));
    let mut writer = match target {
        OutputTarget::None => {
            return Ok(OutputHandle { tx: None, pending: Vec::new(), budget, thread: None })
        }
        OutputTarget::Stdout => Writer::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
        OutputTarget::File { path, max_bytes, max_files } => {
            Writer::File(RotatingFile::open(path, max_bytes, max_files)?)
        }
    };
    // Unbounded in batches: the budget bounds what they hold.
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
    let queued = budget.clone();
    let thread = std::thread::Builder::new().name("podwatch-output".into()).spawn(move || {
        let report = |e: io::Error, stats: &AgentStats| {
            if stats.output_write_errors.fetch_add(1, Relaxed) == 0 {
                error!("writing events failed: {e}");
            }
        };
        while let Some(batch) = rx.blocking_recv() {
            let mut next = Some(batch);
            // Drain whatever is queued, then flush once.
            while let Some(batch) = next {
                for line in batch {
                    if let Err(e) = writer.write_line(&line) {
                        report(e, &stats);
                    }
                    queued.give_back(line.len() + LINE_OVERHEAD);
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = writer.flush() {
                report(e, &stats);
            }
        }
        let _ = writer.flush();
    })?;
    Ok(OutputHandle { tx: Some(tx), pending: Vec::new(), budget, thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> usize {
        fs::read_to_string(path).expect("read").lines().count()
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_gives_them_back_once_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ev = crate::outputs::sinks::testdata::exec_in_pod(7, "2026-12-07T11:00:00Z");
        let cost = ev.json_line().expect("encodes").len() + LINE_OVERHEAD;

        // A budget smaller than one line: every offer is dropped and counted,
        // nothing is queued or written.
        let stats = Arc::new(AgentStats::default());
        let path = dir.path().join("small.jsonl");
        let target = OutputTarget::File { path: path.clone(), max_bytes: 1 << 20, max_files: 1 };
        let mut out = spawn(target, 1024, cost - 1, stats.clone()).expect("spawn");
        for _ in 0..3 {
            out.offer(&ev, &stats);
        }
        assert_eq!(out.budget.used(), (0, 0));
        out.finish();
        assert_eq!(stats.output_queue_drops.load(Relaxed), 3);
        assert_eq!(lines(&path), 0);

        // Room for all: every event written, and the budget is whole again.
        let stats = Arc::new(AgentStats::default());
        let path = dir.path().join("big.jsonl");
        let target = OutputTarget::File { path: path.clone(), max_bytes: 1 << 20, max_files: 1 };
        let mut out = spawn(target, 1024, 1000 * cost, stats.clone()).expect("spawn");
        let budget = out.budget.clone();
        for _ in 0..500 {
            out.offer(&ev, &stats);
        }
        // Held for one batch until the reader flushes (after its drain).
        assert_eq!(budget.used(), (500, 500 * cost));
        out.flush();
        for _ in 0..100 {
            out.offer(&ev, &stats);
        }
        out.finish();
        assert_eq!(stats.output_queue_drops.load(Relaxed), 0);
        assert_eq!(lines(&path), 600);
        assert_eq!(budget.used(), (0, 0));

        // The bound in events holds too.
        let stats = Arc::new(AgentStats::default());
        let path = dir.path().join("count.jsonl");
        let target = OutputTarget::File { path: path.clone(), max_bytes: 1 << 20, max_files: 1 };
        let mut out = spawn(target, 10, 1000 * cost, stats.clone()).expect("spawn");
        for _ in 0..15 {
            out.offer(&ev, &stats);
        }
        out.finish();
        assert_eq!((lines(&path), stats.output_queue_drops.load(Relaxed)), (10, 5));
    }

    #[test]
    fn a_budget_takes_only_what_fits() {
        let b = Budget::new(3, 100);
        assert!(b.take(60));
        assert!(!b.take(41), "60 + 41 bytes is over 100");
        assert!(b.take(40));
        assert!(!b.take(1), "no bytes left");
        assert!(b.take(0), "an empty event still fits");
        assert_eq!(b.used(), (3, 100));
        b.give_back(60);
        assert!(b.take(60));
        assert!(!b.take(0), "three events already");
        assert_eq!(b.used(), (3, 100));
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let mut f = RotatingFile::open(path.clone(), 100, 2).expect("open");
        for i in 0..20 {
            f.write_line(format!("{{\"n\":{i:040}}}\n").as_bytes()).expect("write");
        }
        f.flush().expect("flush");
        assert!(path.exists());
        assert!(dir.path().join("events.jsonl.1").exists());
        assert!(dir.path().join("events.jsonl.2").exists());
        assert!(!dir.path().join("events.jsonl.3").exists());
        for p in [path.clone(), dir.path().join("events.jsonl.1")] {
            let len = fs::metadata(&p).expect("meta").len();
            assert!(len <= 100, "{} is {len} bytes", p.display());
        }
        // The newest line is in the live file.
        let live = fs::read_to_string(&path).expect("read");
        assert!(live.contains(&format!("{:040}", 19)));
    }
}
