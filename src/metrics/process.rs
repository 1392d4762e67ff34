//! The standard `process_*` metrics, read from `/proc/self` at each scrape
//! (Linux; elsewhere none are reported). prometheus-client has no process
//! collector, and the crates that add one pull in a whole procfs layer or
//! libc for six numbers; `/proc/self/stat`, `status`, `limits` and `fd`
//! hold them all. CPU times and the start time are in clock ticks, which
//! the kernel reports to user space in USER_HZ = 100 on every Linux
//! architecture we run on (client_golang's procfs assumes the same).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

const USER_HZ: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector;

/// What `/proc` says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub threads: i64,
    pub virtual_bytes: i64,
    pub start_time_seconds: f64,
    pub resident_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and parentheses, so it is skipped up to the last `)`), plus the
/// boot time (`btime` of `/proc/stat`).
pub fn parse_stat(stat: &str, boot_time: f64) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); fields are 1-based in proc(5)
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / USER_HZ,
        threads: threads as i64,
        virtual_bytes: vsize as i64,
        start_time_seconds: boot_time + start_ticks / USER_HZ,
        ..ProcessStats::default()
    })
}

fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS:   12345 kB` of `/proc/self/status`.
fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_fds(limits: &str) -> Option<i64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let mut stats = parse_stat(&stat, boot)?;
    stats.resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| resident_bytes(&s));
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    stats.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| max_fds(&s));
    Some(stats)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, v: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            s.start_time_seconds,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes as f64,
        )?;
        gauge(
            "process_threads",
            "Number of OS threads in the process",
            s.threads as f64,
        )?;
        if let Some(v) = s.resident_bytes {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                v as f64,
            )?;
        }
        if let Some(v) = s.open_fds {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                v as f64,
            )?;
        }
        if let Some(v) = s.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                v as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_a_stat_line_whose_name_has_spaces_and_parentheses() {
        // proc(5): pid (comm) state ppid … utime(14) stime(15) … num_threads(20)
        // itrealvalue(21) starttime(22) vsize(23) rss(24)
        let line = "4242 (gitbroker (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2048 18446744073709551615";
        let s = parse_stat(line, 1_700_000_000.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.start_time_seconds, 1_700_000_123.45);
        assert!(parse_stat("garbage", 0.0).is_none());
    }

    #[test]
    fn reads_rss_limits_and_boot_time() {
        assert_eq!(
            resident_bytes("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_fds(limits), Some(1024));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let s = read().unwrap();
        assert!(s.threads >= 1);
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() > 0);
        let now = crate::clock::wall_now().timestamp() as f64;
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0);
    }
}
