//! The standard `process_*` metrics (the names every Prometheus client library
//! exports, so stock dashboards and alerts work): CPU time, resident and
//! virtual memory, open and maximum file descriptors, start time. Read from
//! /proc/self at scrape time; a file that cannot be read leaves its metrics out
//! of that scrape instead of failing it.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

/// What one scrape reads from /proc/self/stat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub virtual_bytes: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) is in parentheses and
/// may itself hold spaces or parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest starts at field 3 (state): field n is at index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: num(14)?.checked_add(num(15)?)?,
        start_ticks: num(22)?,
        virtual_bytes: num(23)?,
        rss_pages: num(24)?,
    })
}

/// Boot time (Unix seconds) from /proc/stat's `btime` line.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The soft "Max open files" limit from /proc/<pid>/limits (None when unlimited).
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// Encodes the process_* families for the calling process (the agent).
pub fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    if let Some(st) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(parse_stat) {
        let m = encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(st.cpu_ticks as f64 / ticks).encode(m)?;
        let m = encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory size in bytes.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        ConstGauge::new(st.rss_pages.saturating_mul(page) as i64).encode(m)?;
        let m = encoder.encode_descriptor(
            "process_virtual_memory",
            "Virtual memory size in bytes.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        ConstGauge::new(st.virtual_bytes as i64).encode(m)?;
        if let Some(btime) = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_btime) {
            let m = encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(btime as f64 + st.start_ticks as f64 / ticks).encode(m)?;
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle read_dir holds is one of the entries: not counted.
        let open = dir.count().saturating_sub(1);
        let m = encoder.encode_descriptor(
            "process_open_fds",
            "Number of open file descriptors.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(open as i64).encode(m)?;
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_max_fds) {
        let m = encoder.encode_descriptor(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(max as i64).encode(m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 130 0 0 20 0 9 0 123456 1048576000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(line).expect("parses");
        assert_eq!(
            st,
            Stat { cpu_ticks: 380, start_ticks: 123456, virtual_bytes: 1_048_576_000, rss_pages: 2500 }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None, "short line");
    }

    #[test]
    fn own_stat_parses() {
        let text = std::fs::read_to_string("/proc/self/stat").expect("procfs");
        let st = parse_stat(&text).expect("own stat parses");
        assert!(st.rss_pages > 0 && st.start_ticks > 0);
    }

    #[test]
    fn btime_and_limits() {
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1763900000\nprocesses 5\n"), Some(1_763_900_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds("Max open files            unlimited            unlimited            files\n"),
            None
        );
    }
}
