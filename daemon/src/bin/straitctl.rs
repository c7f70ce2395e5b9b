//! `straitctl`: talks to a running `straitd` over its control socket.
//!
//! ```text
//! straitctl [--socket PATH] show interfaces|routes|counters|drops|workers|sa|events [--json]
//! straitctl [--socket PATH] show nat [rules|sessions] [--json]
//! straitctl [--socket PATH] show lb [--json]
//! straitctl [--socket PATH] lb drain|undrain [SERVICE] BACKEND
//! straitctl [--socket PATH] route add PREFIX via GW[,GW..] [dev IF] | dev IF | blackhole | unreachable
//! straitctl [--socket PATH] route del PREFIX
//! straitctl [--socket PATH] nat add name=N kind=K [field=value ..]
//! straitctl [--socket PATH] nat del NAME
//! straitctl [--socket PATH] sa list
//! straitctl [--socket PATH] sa install-inbound|switch-outbound TUNNEL spi=N cipher=C key=-
//! straitctl [--socket PATH] sa retire-inbound TUNNEL SPI
//! straitctl [--socket PATH] stats [--watch] [--interval S] [--count N] [--json]
//! straitctl [--socket PATH] reload
//! straitctl completions bash|zsh|fish|elvish|powershell
//! straitctl man
//! ```
//!
//! `key=-` reads the key from standard input, so it appears neither in the
//! process list nor in the shell's history; `key=HEX` is refused for that
//! reason. `stats` computes rates from
//! successive counter reads (docs/CLI.md).

#![deny(unsafe_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use strait_daemon::control::{self, DEFAULT_SOCKET};
use zeroize::Zeroizing;

/// The commands, for `--help` and the man page.
const COMMANDS: &str = "\
Commands (docs/CLI.md):
  show interfaces|routes|counters|drops|workers|neighbours [--json]
  show nat [rules|sessions] [--json]
  show sa|events|ike|devices|sites [--json]
  stats [--watch] [--interval S] [--count N] [--json]
  route add PREFIX via GW[,GW..] [dev IF] | dev IF | blackhole | unreachable
  route del PREFIX
  nat add name=NAME kind=snat|masquerade|dnat|static [field=value ..]
  nat del NAME
  sa list
  sa install-inbound|switch-outbound TUNNEL spi=N cipher=C key=- [field=value ..]
  sa retire-inbound TUNNEL SPI
  reload
  completions bash|zsh|fish|elvish|powershell
  man

completions prints a completion script and man this page (roff) on standard
output. key=- reads the SA key from standard input (a key on the command line is
refused).
The daemon's socket is /run/strait/straitd.sock unless straitd --control says otherwise;
for straitd@NAME it is /run/strait-NAME/straitd.sock.";

/// Control a running Strait daemon.
///
/// straitctl sends one command to straitd over its control socket and
/// prints the answer; with --json the answer is JSON.
#[derive(Debug, Parser)]
#[command(name = "straitctl", version, after_long_help = COMMANDS)]
struct Args {
    /// Control socket of the daemon.
    #[arg(long, short, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The command, e.g. `show drops --json`.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.command[0] == "completions" {
        completions(&args.command[1..])
    } else if args.command[0] == "man" && args.command.len() == 1 {
        man()
    } else if args.command[0] == "stats" {
        stats(&args.socket, &args.command[1..])
    } else {
        send(&args.socket, &args.command)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("straitctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `completions SHELL`: the completion script generated from the clap
/// definition, on standard output (the package installs them).
fn completions(words: &[String]) -> Result<(), String> {
    use clap::CommandFactory;
    use clap::ValueEnum;
    let [shell] = words else {
        return Err("usage: straitctl completions bash|zsh|fish|elvish|powershell".into());
    };
    let shell = clap_complete::Shell::from_str(shell, true).map_err(|_| {
        format!("completions: unknown shell {shell:?} (bash, zsh, fish, elvish, powershell)")
    })?;
    clap_complete::generate(
        shell,
        &mut Args::command(),
        "straitctl",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// `man`: straitctl(1) in roff, generated from the clap definition.
fn man() -> Result<(), String> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Args::command())
        .render(&mut std::io::stdout())
        .map_err(|e| format!("man: {e}"))
}

/// Why a key on the command line is refused.
const KEY_ON_COMMAND_LINE: &str = "a key given as key=HEX on the command line is visible to every \
     local user (ps, /proc/PID/cmdline) and stays in shell history; give key=- and write the key \
     to standard input instead, e.g. `echo \"$KEY\" | straitctl sa install-inbound TUNNEL spi=N \
     cipher=C key=-`";

fn send(socket: &Path, command: &[String]) -> Result<(), String> {
    // Copies of the key (from standard input) are wiped when dropped.
    let mut words: Vec<Zeroizing<String>> = Vec::with_capacity(command.len());
    for w in command {
        if w == "key=-" {
            let mut key = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut key)
                .map_err(|e| format!("reading the key from standard input: {e}"))?;
            words.push(Zeroizing::new(format!("key={}", key.trim())));
        } else if w.starts_with("key=") {
            return Err(KEY_ON_COMMAND_LINE.into());
        } else {
            words.push(Zeroizing::new(w.clone()));
        }
    }
    let line = Zeroizing::new(
        words
            .iter()
            .map(|w| w.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let answer = ask(socket, &line)?;
    print!("{answer}");
    if answer.starts_with("error:") {
        Err("the daemon refused the command".into())
    } else {
        Ok(())
    }
}

fn ask(socket: &Path, command: &str) -> Result<String, String> {
    control::request(socket, command).map_err(|e| format!("{}: {e}", socket.display()))
}

/// Totals of one counter read, per interface and per worker.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
    /// (name, rx packets, rx bytes, tx packets, tx bytes, drops)
    rows: Vec<(String, [u64; 5])>,
}

impl Sample {
    fn from_json(counters: &Value, workers: &Value) -> Result<Sample, String> {
        let field = |v: &Value, k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("counter {k} missing in {v}"))
        };
        let row = |v: &Value| -> Result<[u64; 5], String> {
            Ok([
                field(v, "rx_packets")?,
                field(v, "rx_bytes")?,
                field(v, "tx_packets")?,
                field(v, "tx_bytes")?,
                field(v, "dropped")?,
            ])
        };
        let mut rows = Vec::new();
        for (name, v) in counters.as_object().ok_or("show counters: not an object")? {
            rows.push((name.clone(), row(v)?));
        }
        for w in workers.as_array().ok_or("show workers: not an array")? {
            rows.push((format!("worker {}", field(w, "worker")?), row(w)?));
        }
        Ok(Sample { rows })
    }
}

/// Per-second rates between two samples: (name, rx pps, rx Mbit/s, tx
/// pps, tx Mbit/s, drops/s). Counters that went backwards (a restarted
/// daemon) count as zero.
fn rates(before: &Sample, after: &Sample, seconds: f64) -> Vec<(String, [f64; 5])> {
    after
        .rows
        .iter()
        .filter_map(|(name, now)| {
            let (_, then) = before.rows.iter().find(|(n, _)| n == name)?;
            let d = |i: usize| now[i].saturating_sub(then[i]) as f64 / seconds;
            Some((name.clone(), [d(0), d(1) * 8e-6, d(2), d(3) * 8e-6, d(4)]))
        })
        .collect()
}

fn read_sample(socket: &Path) -> Result<Sample, String> {
    let parse =
        |text: String| serde_json::from_str::<Value>(&text).map_err(|_| text.trim().to_owned());
    let counters = parse(ask(socket, "show counters --json")?)?;
    let workers = parse(ask(socket, "show workers --json")?)?;
    Sample::from_json(&counters, &workers)
}

fn stats(socket: &Path, words: &[String]) -> Result<(), String> {
    let mut watch = false;
    let mut json_out = false;
    let mut interval = 1.0f64;
    let mut count: Option<u64> = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "--watch" => watch = true,
            "--json" => json_out = true,
            "--interval" => {
                interval = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v: &f64| *v >= 0.05 && *v <= 3600.0)
                    .ok_or("--interval takes seconds between 0.05 and 3600")?
            }
            "--count" => {
                count = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|v| *v > 0)
                        .ok_or("--count takes a positive number")?,
                )
            }
            other => return Err(format!("stats: unknown option {other:?}")),
        }
    }
    let samples = if watch { count } else { Some(1) };
    let mut before = read_sample(socket)?;
    let mut at = Instant::now();
    let mut done = 0u64;
    while samples.is_none_or(|n| done < n) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let after = read_sample(socket)?;
        let now = Instant::now();
        let r = rates(&before, &after, now.duration_since(at).as_secs_f64());
        if json_out {
            let rows: serde_json::Map<String, Value> = r
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        json!({ "rx_pps": v[0], "rx_mbps": v[1], "tx_pps": v[2],
                                "tx_mbps": v[3], "drops_per_s": v[4] }),
                    )
                })
                .collect();
            println!("{}", Value::Object(rows));
        } else {
            println!(
                "{:<12} {:>12} {:>10} {:>12} {:>10} {:>10}",
                "", "rx pps", "rx Mbit/s", "tx pps", "tx Mbit/s", "drops/s"
            );
            for (n, v) in &r {
                println!(
                    "{:<12} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>10.0}",
                    n, v[0], v[1], v[2], v[3], v[4]
                );
            }
        }
        before = after;
        at = now;
        done += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_per_second() {
        let counters = |rx: u64| {
            json!({ "lan": { "rx_packets": rx, "rx_bytes": rx * 1000,
            "tx_packets": rx / 2, "tx_bytes": rx * 500, "dropped": rx / 10 } })
        };
        let workers = |rx: u64| {
            json!([{ "worker": 0, "rx_packets": rx, "rx_bytes": rx * 1000,
            "tx_packets": rx, "tx_bytes": 0, "dropped": 0 }])
        };
        let a = Sample::from_json(&counters(1000), &workers(1000)).unwrap();
        let b = Sample::from_json(&counters(3000), &workers(500)).unwrap();
        let r = rates(&a, &b, 2.0);
        assert_eq!(r[0].0, "lan");
        // 2000 packets of 1000 bytes in 2 s: 1000 pps, 8 Mbit/s.
        assert_eq!(r[0].1, [1000.0, 8.0, 500.0, 4.0, 100.0]);
        // A counter that went backwards is not a negative rate.
        assert_eq!(r[1].0, "worker 0");
        assert_eq!(r[1].1[0], 0.0);
        assert!(Sample::from_json(&json!({"lan": {}}), &json!([])).is_err());
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        assert!(completions(&["tcsh".into()]).is_err());
        assert!(completions(&[]).is_err());
    }
}
