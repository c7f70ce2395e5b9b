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
                    "{} not found: build with `cargo build --release -p strait-dataplane` \
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
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
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

    /// `show <what> --json`, parsed.
    pub fn show_json(&self, what: &str) -> Result<serde_json::Value> {
        let text = self.query(&format!("show {what} --json"))?;
        serde_json::from_str(&text).with_context(|| format!("straitctl show {what}: {text}"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Straitd {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
