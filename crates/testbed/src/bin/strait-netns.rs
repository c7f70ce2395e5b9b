//! Builds a namespace topology from a description file, runs a command with
//! it, and tears it down afterwards — also when the command fails or the
//! user interrupts it.
//!
//! ```text
//! strait-netns run TOPOLOGY [--tag TAG] -- COMMAND [ARGS...]
//! strait-netns check TOPOLOGY
//! strait-netns cleanup            # delete namespaces of dead runs
//! ```
//!
//! The command sees one variable per namespace, `NS_<SHORT>` (upper case,
//! `-` as `_`), holding the full namespace name.

#![deny(unsafe_code)]

use std::process::{Command, ExitCode};

use strait_testbed::{Testbed, Topology};

fn usage() -> ExitCode {
    eprintln!(
        "usage: strait-netns run TOPOLOGY [--tag TAG] -- COMMAND [ARGS...]\n       \
         strait-netns check TOPOLOGY\n       strait-netns cleanup"
    );
    ExitCode::from(2)
}

fn load(path: &str) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Topology::parse(&text).map_err(|e| format!("{path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() == 2 => match load(&args[1]) {
            Ok(t) => {
                println!("{}: {} namespaces", args[1], t.namespaces().len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("strait-netns: {e}");
                ExitCode::FAILURE
            }
        },
        Some("cleanup") => cleanup(),
        Some("run") if args.len() >= 4 => run(&args[1..]),
        _ => usage(),
    }
}

fn run(args: &[String]) -> ExitCode {
    let path = &args[0];
    let mut tag = "net".to_owned();
    let mut rest = &args[1..];
    if rest.first().map(String::as_str) == Some("--tag") && rest.len() >= 2 {
        tag = rest[1].clone();
        rest = &rest[2..];
    }
    let Some(("--", command)) = rest.split_first().map(|(a, b)| (a.as_str(), b)) else {
        return usage();
    };
    if command.is_empty() {
        return usage();
    }
    let topology = match load(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("strait-netns: {e}");
            return ExitCode::FAILURE;
        }
    };
    strait_testbed::require_root();
    // The child owns the terminal's signals; this process only waits and
    // then tears down, so an interrupt still cleans up.
    strait_testbed::ignore_termination_signals();
    let mut tb = Testbed::new(&tag);
    let namespaces = match topology.build(&mut tb) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("strait-netns: building {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    for (short, ns) in &namespaces {
        let var = format!("NS_{}", short.to_uppercase().replace('-', "_"));
        cmd.env(var, ns.name());
    }
    strait_testbed::default_termination_signals_in_child(&mut cmd);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strait-netns: cannot run {}: {e}", command[0]);
            return ExitCode::FAILURE;
        }
    };
    tb.teardown();
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::from(130),
    }
}

/// Deletes `st-*` namespaces whose creating process is gone.
fn cleanup() -> ExitCode {
    strait_testbed::require_root();
    let list = strait_testbed::run(&["ip", "netns", "list"]).unwrap_or_default();
    let mut removed = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("st-") else {
            continue;
        };
        // st-<tag>-<pid>-<n>-<short>: the pid is the first all-digit field
        // after the tag.
        let pid = rest.split('-').skip(1).find_map(|f| f.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = strait_testbed::run(&["ip", "netns", "del", name]);
            removed += 1;
        }
    }
    println!("removed {removed} stale namespaces");
    ExitCode::SUCCESS
}
