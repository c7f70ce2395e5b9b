//! A `straitd` started inside a namespace for one benchmark case, stopped
//! (SIGTERM, then SIGKILL) when dropped, also when the case fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strait_testbed::Netns;

/// Where the daemon and its control tool live.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `straitd`.
    pub straitd: PathBuf,
    /// `straitctl`.
    pub straitctl: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (a cargo `target/release`), checked to exist.
    pub fn in_dir(dir: &Path) -> Result<Binaries> {
        let b = Binaries {
            straitd: dir.join("straitd"),
            straitctl: dir.join("straitctl"),
        };
        for p in [&b.straitd, &b.straitctl] {
            if !p.is_file() {
                bail!(
                    "{} not found: build with `cargo build --release -p strait-daemon` \
                     or pass --bin-dir",
                    p.display()
                );
            }
        }
        Ok(b)
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Straitd {
    child: Child,
    control: PathBuf,
    straitctl: PathBuf,
    name: String,
    /// The configuration file it reads (and rereads on `reload`).
    config: PathBuf,
    /// Its SA state directory, named in every version of the file.
    state: PathBuf,
}

/// `config` with `state_dir = "<state>"` and `manual_keying = true` (the
/// benches' tunnels have configured keys) as the first lines of `[engine]`
/// (a section of its own when there is none).
fn with_state_dir(config: &str, state: &Path) -> String {
    let line = format!(
        "state_dir = \"{}\"\nmanual_keying = true\n",
        state.display()
    );
    match config.find("[engine]\n") {
        Some(at) => {
            let at = at + "[engine]\n".len();
            format!("{}{line}{}", &config[..at], &config[at..])
        }
        None => format!("[engine]\n{line}{config}"),
    }
}

/// How long a daemon may take to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl Straitd {
    /// Writes `config` to `<dir>/<name>.toml` and starts the daemon in `ns`;
    /// returns once its control socket answers.
    pub fn start(
        ns: &Netns,
        bins: &Binaries,
        dir: &Path,
        name: &str,
        config: &str,
    ) -> Result<Straitd> {
        // Every daemon gets a fresh SA state directory beside its config:
        // each case's peers (the generator among them) seal from 1.
        let state = dir.join(format!("{name}.state"));
        let _ = std::fs::remove_dir_all(&state);
        let config = with_state_dir(config, &state);
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, &config).with_context(|| format!("writing {}", path.display()))?;
        let control = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&control);
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = ns
            .command(&[
                &bins.straitd.to_string_lossy(),
                "--config",
                &path.to_string_lossy(),
                "--control",
                &control.to_string_lossy(),
            ])
            .env("STRAIT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bins.straitd.display()))?;
        let mut d = Straitd {
            child,
            control,
            straitctl: bins.straitctl.clone(),
            name: name.to_owned(),
            config: path,
            state,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = d.child.try_wait()? {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                bail!("straitd {name} exited at start ({status}): {}", log.trim());
            }
            if d.control.exists() && d.query("show workers").is_ok() {
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!("straitd {name}: no control socket after {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes `straitctl show <what>` for each of `whats` into
    /// `out/<name>.counters.txt` (errors included, for the record).
    pub fn save_shows(&self, out: &Path, name: &str, whats: &[&str]) {
        let mut text = String::new();
        for what in whats {
            let r = self.query(&format!("show {what}"));
            text.push_str(&format!(
                "== show {what}\n{}\n",
                r.unwrap_or_else(|e| format!("{e:#}"))
            ));
        }
        let _ = std::fs::write(out.join(format!("{name}.counters.txt")), text);
    }

    /// Runs `straitctl <command>` and returns its output.
    pub fn query(&self, command: &str) -> Result<String> {
        let out = Command::new(&self.straitctl)
            .arg("--socket")
            .arg(&self.control)
            .args(command.split_whitespace())
            .output()?;
        if !out.status.success() {
            bail!(
                "straitctl {command} ({}): {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `straitctl <command>` with `input` on its standard input (a key
    /// given as `key=-`, never on the command line) and returns its output.
    pub fn query_with_input(&self, command: &str, input: &str) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new(&self.straitctl)
            .arg("--socket")
            .arg(&self.control)
            .args(command.split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "straitctl {command} ({}): {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Replaces the daemon's configuration file with `config` (its state
    /// directory kept) and has it reload the file (`straitctl reload`).
    pub fn reload_with(&self, config: &str) -> Result<String> {
        let text = with_state_dir(config, &self.state);
        std::fs::write(&self.config, text)
            .with_context(|| format!("writing {}", self.config.display()))?;
        self.query("reload")
    }

    /// Resident memory of the daemon, KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        vm_rss_kib(self.pid())
    }

    /// `show <what> --json`, parsed.
    pub fn show_json(&self, what: &str) -> Result<serde_json::Value> {
        let text = self.query(&format!("show {what} --json"))?;
        serde_json::from_str(&text).with_context(|| format!("straitctl show {what}: {text}"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Scheduler accounting of the worker threads, summed.
    pub fn worker_sched(&self) -> Option<SchedTime> {
        sched_time(self.pid(), "strait-w")
    }
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Time threads spent running and runnable-but-waiting for a CPU
/// (`/proc/<pid>/task/<tid>/schedstat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedTime {
    /// Nanoseconds on a CPU.
    pub run_ns: u64,
    /// Nanoseconds waiting on a run queue.
    pub wait_ns: u64,
}

impl SchedTime {
    /// Share of the runnable time spent running, in percent, between
    /// `earlier` and `self`. A spinning worker is always runnable, so this
    /// says how much of its core it really had.
    pub fn on_cpu_percent_since(&self, earlier: &SchedTime) -> Option<f64> {
        let run = self.run_ns.checked_sub(earlier.run_ns)?;
        let wait = self.wait_ns.checked_sub(earlier.wait_ns)?;
        (run + wait > 0).then(|| 100.0 * run as f64 / (run + wait) as f64)
    }
}

/// Sums the schedstat of `pid`'s threads whose name starts with `prefix`.
pub fn sched_time(pid: u32, prefix: &str) -> Option<SchedTime> {
    let mut total = SchedTime::default();
    let mut found = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let mut f = stat.split_whitespace().map(|x| x.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(wait))) = (f.next(), f.next()) {
            total.run_ns += run;
            total.wait_ns += wait;
            found = true;
        }
    }
    found.then_some(total)
}

/// CPU the processes `pids` used together over `window` (every thread,
/// from schedstat: nanosecond resolution), in percent of one core. `None`
/// when none of them could be read.
pub fn idle_cpu_percent(pids: &[u32], window: Duration) -> Option<f64> {
    let total = |pids: &[u32]| -> Option<u64> {
        let times: Vec<u64> = pids
            .iter()
            .filter_map(|&p| sched_time(p, "").map(|t| t.run_ns))
            .collect();
        (!times.is_empty()).then(|| times.iter().sum())
    };
    let before = total(pids)?;
    let start = std::time::Instant::now();
    std::thread::sleep(window);
    let after = total(pids)?;
    let secs = start.elapsed().as_secs_f64();
    Some(100.0 * after.saturating_sub(before) as f64 / 1e9 / secs)
}

impl Drop for Straitd {
    fn drop(&mut self) {
        crate::sys::terminate(&mut self.child, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_is_the_first_line_of_engine() {
        let state = Path::new("/tmp/x.state");
        assert_eq!(
            with_state_dir("[engine]\nworkers = 1\n", state),
            "[engine]\nstate_dir = \"/tmp/x.state\"\nmanual_keying = true\nworkers = 1\n"
        );
        assert_eq!(
            with_state_dir("[[interface]]\n", state),
            "[engine]\nstate_dir = \"/tmp/x.state\"\nmanual_keying = true\n[[interface]]\n"
        );
    }

    #[test]
    fn own_resident_memory_is_read() {
        assert!(vm_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn on_cpu_share() {
        let a = SchedTime {
            run_ns: 100,
            wait_ns: 100,
        };
        let b = SchedTime {
            run_ns: 400,
            wait_ns: 200,
        };
        assert_eq!(b.on_cpu_percent_since(&a), Some(75.0));
        assert_eq!(a.on_cpu_percent_since(&a), None);
        assert_eq!(a.on_cpu_percent_since(&b), None);
    }

    #[test]
    fn reads_this_process_threads() {
        let name = "strait-w-test";
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(|| {
                // Spin until the thread has had 10 ms of CPU by its own
                // schedstat (bounded): on a loaded box wall time is no
                // measure of CPU time.
                let t = std::time::Instant::now();
                loop {
                    let s = sched_time(std::process::id(), "strait-w-test");
                    let done = s.is_some_and(|s| s.run_ns >= 10_000_000);
                    if done || t.elapsed() > Duration::from_secs(5) {
                        return s;
                    }
                    for _ in 0..100_000 {
                        std::hint::spin_loop();
                    }
                }
            })
            .unwrap();
        let s = h.join().unwrap().expect("own thread found");
        assert!(s.run_ns >= 10_000_000, "{s:?}");
        assert!(sched_time(std::process::id(), "no-such-thread").is_none());
    }
}
