//! Event outputs for people and files: JSON lines on stdout, or in a file that
//! rotates by size. Each runs on its own thread behind a bounded queue; a full
//! queue drops (and counts) rather than slowing the ring buffer reader.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
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
    pub tx: Option<mpsc::Sender<Arc<Event>>>,
    thread: Option<JoinHandle<()>>,
}

impl OutputHandle {
    /// Hands an event over without waiting; a full queue counts a drop.
    pub fn offer(&self, ev: &Arc<Event>, stats: &AgentStats) {
        if let Some(tx) = &self.tx {
            if tx.try_send(ev.clone()).is_err() {
                stats.output_queue_drops.fetch_add(1, Relaxed);
            }
        }
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

pub fn spawn(target: OutputTarget, capacity: usize, stats: Arc<AgentStats>) -> io::Result<OutputHandle> {
    let mut writer = match target {
        OutputTarget::None => return Ok(OutputHandle { tx: None, thread: None }),
        OutputTarget::Stdout => Writer::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
        OutputTarget::File { path, max_bytes, max_files } => {
            Writer::File(RotatingFile::open(path, max_bytes, max_files)?)
        }
    };
    let (tx, mut rx) = mpsc::channel::<Arc<Event>>(capacity.max(1));
    let thread = std::thread::Builder::new().name("podwatch-output".into()).spawn(move || {
        let report = |e: io::Error, stats: &AgentStats| {
            if stats.output_write_errors.fetch_add(1, Relaxed) == 0 {
                error!("writing events failed: {e}");
            }
        };
        while let Some(ev) = rx.blocking_recv() {
            let mut next = Some(ev);
            // Drain whatever is queued, then flush once.
            while let Some(ev) = next {
                if let Some(line) = ev.json_line() {
                    if let Err(e) = writer.write_line(line) {
                        report(e, &stats);
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Err(e) = writer.flush() {
                report(e, &stats);
            }
        }
        let _ = writer.flush();
    })?;
    Ok(OutputHandle { tx: Some(tx), thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;

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
