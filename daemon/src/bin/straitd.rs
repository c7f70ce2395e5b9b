//! `straitd`: the Strait dataplane daemon.
//!
//! ```text
//! straitd --config /etc/strait/strait.toml [--control /run/strait/straitd.sock] [--check]
//! straitd --config hub.toml --device-key SERIAL
//! ```
//!
//! `--device-key` prints the key of the device SERIAL derived from the
//! hub's `[ike] device_secret_file`, for the device's key file.
//!
//! With `[metrics] listen = "127.0.0.1:9464"` it also serves Prometheus
//! metrics on that loopback address.
//!
//! Once set up it keeps no capability, sets no_new_privs and is not
//! dumpable (`strait_daemon::privileges`).
//!
//! SIGINT/SIGTERM stop it cleanly (rings drained, programs detached, UMEM
//! freed); SIGHUP reloads the configuration file, keeping the running one
//! if the new one is refused.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strait_daemon::control::{self, DEFAULT_SOCKET};
use strait_daemon::events::EventLog;
use strait_daemon::privileges;
use strait_daemon::server::ServerStats;
use strait_dataplane::{Config, Engine, EngineEvent};

/// Strait dataplane daemon.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: String,
    /// Control socket path.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    control: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the key of the device with this serial number, derived from
    /// the `[ike] device_secret_file`, and exit.
    #[arg(long, value_name = "SERIAL")]
    device_key: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    if let Some(serial) = &args.device_key {
        println!(
            "{}",
            strait_daemon::ike::derived_key(&config, &args.config, serial)?
        );
        return Ok(());
    }
    strait_daemon::ike::check(&config, &args.config)?;
    strait_daemon::dns::check(&config).with_context(|| args.config.clone())?;
    if args.check {
        Engine::check(&config, &args.config)?;
        println!("{}: ok", args.config);
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing signal handlers")?;

    let engine = Arc::new(Engine::start(config, &args.config)?);
    for r in engine.bind_reports() {
        tracing::info!("{r}");
    }
    let events = Arc::new(EventLog::default());
    let control_stats = Arc::new(ServerStats::default());
    let metrics_stats = Arc::new(ServerStats::default());
    let views = control::Views::default();
    let control_thread = control::serve(
        Arc::clone(&engine),
        Arc::clone(&events),
        views.clone(),
        &args.control,
        Arc::clone(&control_stats),
        Arc::clone(&stop),
    )
    .with_context(|| format!("control socket {}", args.control.display()))?;
    let ike_runtime = strait_daemon::ike::start(
        Arc::clone(&engine),
        Arc::clone(&views.ike),
        Arc::clone(&stop),
    )?;
    let metrics_thread = match engine.config().metrics.listen_addr() {
        Ok(Some(addr)) => Some(
            strait_daemon::metrics::serve(
                Arc::clone(&engine),
                addr,
                Arc::clone(&metrics_stats),
                vec![
                    ("control", control_stats),
                    ("metrics", Arc::clone(&metrics_stats)),
                ],
                views.clone(),
                Arc::clone(&stop),
            )
            .with_context(|| format!("metrics endpoint {addr}"))?,
        ),
        Ok(None) => None,
        Err(e) => anyhow::bail!("[metrics]: {e}"),
    };
    // The network services bind their sockets here, while binding low
    // ports is still allowed; the loop runs them on one thread.
    let mut net = strait_daemon::netloop::NetLoop::new().context("network services")?;
    if let Some(proxy) = &engine.config().proxy {
        let plan = proxy.checked(&args.config)?;
        net.add(Box::new(strait_daemon::proxy::Proxy::bind(plan)?));
    }
    if let Some(dns) = strait_daemon::dns::DnsService::bind(
        Arc::clone(&engine),
        Arc::clone(&views.dns),
        net.waker(),
    )? {
        net.add(Box::new(dns));
    }
    // Always: a reload may add the first load balancer (with nothing to
    // check it costs the loop nothing).
    net.add(Box::new(strait_daemon::lb::HealthChecker::new(Arc::clone(
        &engine,
    ))));
    let net_thread = if net.is_empty() {
        None
    } else {
        Some(net.spawn(Arc::clone(&stop))?)
    };
    // Set up: from here on nothing privileged is done (privileges.rs).
    let kept = privileges::restrict(&privileges::runtime_capabilities(&engine.config().engine))
        .context("giving up privileges")?;
    tracing::info!(
        kept = %if kept.kept.is_empty() {
            "none".to_owned()
        } else {
            kept.kept.iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
        },
        threads = kept.threads,
        "capabilities dropped, no_new_privs set, not dumpable"
    );
    tracing::info!(
        config = %args.config,
        control = %args.control.display(),
        workers = engine.workers(),
        "forwarding"
    );
    let mut failed = false;
    let mut new_events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        engine.poll_events(&mut new_events);
        for e in new_events.drain(..) {
            match e {
                EngineEvent::SaHardExpired(_) => tracing::error!(event = e.kind(), "{e}"),
                _ => tracing::warn!(event = e.kind(), "{e}"),
            }
            if let Some(ike) = &ike_runtime {
                let _ = ike.events.try_send(e.clone());
            }
            events.record(e);
        }
        let dead = engine.dead_workers();
        if !dead.is_empty() {
            tracing::error!(?dead, "worker thread ended; stopping");
            failed = true;
            stop.store(true, Ordering::Relaxed);
            break;
        }
        if reload.swap(false, Ordering::Relaxed) {
            let answer = control::execute(&engine, &events, &views, "reload");
            if answer.starts_with("error:") {
                tracing::error!("{}", answer.trim());
            } else {
                tracing::info!("{}", answer.trim());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("stopping");
    let _ = control_thread.join();
    if let Some(ike) = ike_runtime {
        let _ = ike.thread.join();
    }
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    if let Some(t) = net_thread {
        let _ = t.join();
    }
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.stop(),
        Err(_) => tracing::warn!("engine still referenced at exit"),
    }
    if failed {
        anyhow::bail!("a worker failed");
    }
    Ok(())
}
