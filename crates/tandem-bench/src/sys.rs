//! Process figures read from `/proc` (Linux): CPU time and resident memory
//! of the generator and of the server processes it started.

use std::time::Instant;

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // The parent is the 4th field: the 2nd after the name.
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU use of a set of processes over a window, as a percentage of one core.
pub struct CpuWindow {
    pids: Vec<u32>,
    start: Vec<f64>,
    at: Instant,
}

impl CpuWindow {
    pub fn start(pids: Vec<u32>) -> CpuWindow {
        let start = pids.iter().map(|&p| cpu_seconds(p)).collect();
        CpuWindow {
            pids,
            start,
            at: Instant::now(),
        }
    }

    /// Percent of one core used since `start`, summed over the processes.
    pub fn percent(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        let used: f64 = self
            .pids
            .iter()
            .zip(&self.start)
            .map(|(&p, s)| cpu_seconds(p) - s)
            .sum();
        100.0 * used / wall
    }
}

/// CPU seconds the whole machine spent busy (every core; user, nice,
/// system, irq, softirq, steal), from `/proc/stat`.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy / 100.0
}

/// The whole machine's busy CPU over a window, in % of one core: what the
/// measured processes used plus everyone else (Redis, the kernel's network
/// work, and anything else running that should not be).
pub struct MachineWindow {
    start: f64,
    at: Instant,
}

impl MachineWindow {
    pub fn start() -> MachineWindow {
        MachineWindow {
            start: machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    pub fn percent(&self) -> f64 {
        100.0 * (machine_busy_seconds() - self.start) / self.at.elapsed().as_secs_f64()
    }
}
