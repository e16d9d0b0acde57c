//! Event outputs for people and files: JSON lines on stdout, or in a file that
//! rotates by size. Each runs on its own thread behind a queue bounded in
//! events and in bytes; a full queue drops (and counts) rather than slowing
//! the ring buffer reader. The byte bound is what keeps the agent's memory
//! flat when the output falls behind (a backlog of 65,536 file events is
//! ~100 MiB; 8 MiB by default).

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

use tokio::sync::mpsc;
use tracing::error;

use crate::{pipeline::event::Event, telemetry::stats::AgentStats};

#[derive(Debug, Clone, PartialEq)]
pub enum OutputTarget {
    Stdout,
    File { path: PathBuf, max_bytes: u64, max_files: u32 },
    None,
}

pub struct OutputHandle {
    pub tx: Option<mpsc::Sender<(Arc<Event>, usize)>>,
    budget: Arc<Budget>,
    thread: Option<JoinHandle<()>>,
}

/// Bytes a queue may hold: taken when an event is queued, given back once
/// it is written.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget { used: AtomicUsize::new(0), max }
    }

    /// Takes `n` bytes if they fit.
    pub fn take(&self, n: usize) -> bool {
        self.used.fetch_update(Relaxed, Relaxed, |u| (u + n <= self.max).then_some(u + n)).is_ok()
    }

    pub fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }
}

impl OutputHandle {
    /// Hands an event over without waiting; a full queue (in events or in
    /// bytes) counts a drop.
    pub fn offer(&self, ev: &Arc<Event>, stats: &AgentStats) {
        let Some(tx) = &self.tx else { return };
        let cost = ev.approx_bytes();
        if !self.budget.take(cost) {
            stats.output_queue_drops.fetch_add(1, Relaxed);
            return;
        }
        if tx.try_send((ev.clone(), cost)).is_err() {
            self.budget.give_back(cost);
            stats.output_queue_drops.fetch_add(1, Relaxed);
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Closes the queue and waits until everything queued is written.
    pub fn finish(mut self) {
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
    let budget = Arc::new(Budget::new(max_bytes));
    let mut writer = match target {
        OutputTarget::None => return Ok(OutputHandle { tx: None, budget, thread: None }),
        OutputTarget::Stdout => Writer::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
        OutputTarget::File { path, max_bytes, max_files } => {
            Writer::File(RotatingFile::open(path, max_bytes, max_files)?)
        }
    };
    let (tx, mut rx) = mpsc::channel::<(Arc<Event>, usize)>(capacity.max(1));
    let queued = budget.clone();
    let thread = std::thread::Builder::new().name("podwatch-output".into()).spawn(move || {
        let report = |e: io::Error, stats: &AgentStats| {
            if stats.output_write_errors.fetch_add(1, Relaxed) == 0 {
                error!("writing events failed: {e}");
            }
        };
        while let Some(ev) = rx.blocking_recv() {
            let mut next = Some(ev);
            // Drain whatever is queued, then flush once.
            while let Some((ev, cost)) = next {
                if let Some(line) = ev.json_line() {
                    if let Err(e) = writer.write_line(line) {
                        report(e, &stats);
                    }
                }
                drop(ev);
                queued.give_back(cost);
                next = rx.try_recv().ok();
            }
            if let Err(e) = writer.flush() {
                report(e, &stats);
            }
        }
        let _ = writer.flush();
    })?;
    Ok(OutputHandle { tx: Some(tx), budget, thread: Some(thread) })
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
        let cost = ev.approx_bytes();
        assert!((500..4096).contains(&cost), "an exec event's estimate: {cost} bytes");

        // A budget smaller than one event: every offer is dropped and counted,
        // nothing is queued or written.
        let stats = Arc::new(AgentStats::default());
        let path = dir.path().join("small.jsonl");
        let target = OutputTarget::File { path: path.clone(), max_bytes: 1 << 20, max_files: 1 };
        let out = spawn(target, 1024, cost - 1, stats.clone()).expect("spawn");
        for _ in 0..3 {
            out.offer(&ev, &stats);
        }
        assert_eq!(out.queued_bytes(), 0);
        out.finish();
        assert_eq!(stats.output_queue_drops.load(Relaxed), 3);
        assert_eq!(lines(&path), 0);

        // Room for all: every event written, and the budget is whole again.
        let stats = Arc::new(AgentStats::default());
        let path = dir.path().join("big.jsonl");
        let target = OutputTarget::File { path: path.clone(), max_bytes: 1 << 20, max_files: 1 };
        let out = spawn(target, 1024, 1000 * cost, stats.clone()).expect("spawn");
        let budget = out.budget.clone();
        for _ in 0..500 {
            out.offer(&ev, &stats);
        }
        out.finish();
        assert_eq!(stats.output_queue_drops.load(Relaxed), 0);
        assert_eq!(lines(&path), 500);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_budget_takes_only_what_fits() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41), "60 + 41 is over 100");
        assert!(b.take(40));
        assert!(!b.take(1));
        b.give_back(60);
        assert!(b.take(60));
        assert_eq!(b.used(), 100);
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
