//! End-to-end: the SNI/Host forward proxy in `straitd`, with real clients
//! and servers from Debian.
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2
//!
//! `straitd` in dp proxies 10.1.0.1:443 and :80, resolving names with
//! dnsmasq on h2 and connecting from 10.2.0.1 to `openssl s_server`
//! (443) and `python3 -m http.server` (80) on h2. The client reaches the
//! proxy's address directly (its socket is the kernel's, behind the host
//! path's TAP devices); dp's kernel gets static neighbours for both hosts.
//!
//! Needs root (namespaces, veth, XDP), curl, openssl, dnsmasq (Debian
//! dnsmasq-base) and python3.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use strait_testbed::{require_program, Netns};

mod common;
use common::{within, ForwardBed};

const CONFIG: &str = r#"
[engine]
workers = 1
poll = "adaptive"

[[interface]]
name = "left"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]

[proxy]
listen = ["10.1.0.1:443", "10.1.0.1:80", "10.1.0.1:8443"]
allow = ["*.accel.test", "plain.test", "missing.test"]
deny = ["blocked.accel.test"]
resolver = "10.2.0.2:53"
egress = "10.2.0.1"
head_timeout = 2
idle_timeout = 3
max_connections = 8
"#;

/// A process in a test namespace, killed when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ns: &Netns, what: &'static str, argv: &[&str]) -> Spawned {
    Spawned(
        ns.spawn(argv)
            .unwrap_or_else(|e| panic!("starting {what}: {e}")),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for www.accel.test signed by it, in `dir`.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Strait test CA",
        "-days",
        "1",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=www.accel.test",
    ]);
    openssl(dir, &csr);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:www.accel.test\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

fn curl(ns: &Netns, args: &[&str]) -> (bool, String, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "10"];
    argv.extend(args);
    let out = ns.output(&argv).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn port_open(ns: &Netns, addr: &'static str) -> bool {
    ns.enter(move || {
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
    })
    .unwrap_or(false)
}

#[test]
fn sni_and_host_proxy_with_real_clients_and_servers() {
    for (prog, package) in [
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("dnsmasq", "dnsmasq-base"),
        ("python3", "python3"),
    ] {
        require_program(prog, package);
    }
    let started = Instant::now();
    let bed = ForwardBed::new("proxy", CONFIG);
    let dir = bed.dir.clone();
    certificates(&dir);
    // dp's kernel reaches both hosts through the TAPs (static neighbours:
    // ARP on the wire is the dataplane's).
    for (ns, ifname, ip, tap) in [
        (&bed.h1, "eth0", "10.1.0.2", "st-left"),
        (&bed.h2, "eth0", "10.2.0.2", "st-right"),
    ] {
        let mac = ns.mac(ifname).unwrap();
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        bed.dp
            .ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac,
                "dev",
                tap,
                "nud",
                "permanent",
            ])
            .unwrap();
    }

    // h2: DNS for the test's names, a TLS server, an HTTP server that logs
    // the address it sees.
    let pid = dir.join("dnsmasq.pid");
    let _dns = spawn(
        &bed.h2,
        "dnsmasq",
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            "--listen-address=10.2.0.2",
            "--port=53",
            &format!("--pid-file={}", pid.display()),
            "--address=/accel.test/10.2.0.2",
            "--address=/plain.test/10.2.0.2",
            // Answers with a TTL, which the proxy keeps them for.
            "--local-ttl=300",
        ],
    );
    let cert = dir.join("srv.pem").display().to_string();
    let key = dir.join("srv.key").display().to_string();
    let _tls = spawn(
        &bed.h2,
        "openssl s_server",
        &[
            "openssl", "s_server", "-quiet", "-accept", "443", "-cert", &cert, "-key", &key, "-www",
        ],
    );
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    std::fs::write(www.join("index.html"), "plain through the proxy\n").unwrap();
    let http_log = dir.join("http.log");
    let log = std::fs::File::create(&http_log).unwrap();
    let _http = Spawned(
        bed.h2
            .command(&[
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                "10.2.0.2",
                "--directory",
                www.to_str().unwrap(),
            ])
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    within("h2's servers listening", Duration::from_secs(10), || {
        port_open(&bed.h2, "10.2.0.2:443") && port_open(&bed.h2, "10.2.0.2:80")
    });

    let ca = dir.join("ca.pem").display().to_string();
    // HTTPS through the SNI proxy: a real handshake with the real server.
    let (ok, body, err) = curl(
        &bed.h1,
        &[
            "--cacert",
            &ca,
            "--resolve",
            "www.accel.test:443:10.1.0.1",
            "https://www.accel.test/",
        ],
    );
    assert!(ok, "curl https through the proxy: {err}");
    assert!(body.contains("s_server"), "s_server's status page: {body}");

    // HTTP by Host, a 4 MiB body relayed whole; the server saw the egress
    // address.
    let (ok, body, err) = curl(
        &bed.h1,
        &["--resolve", "plain.test:80:10.1.0.1", "http://plain.test/"],
    );
    assert!(ok && body == "plain through the proxy\n", "{err} {body:?}");
    let out = bed
        .h1
        .output(&["sh", "-c", "curl -sS --max-time 20 --resolve plain.test:80:10.1.0.1 http://plain.test/big.bin | sha256sum"])
        .unwrap();
    let want = {
        let o = std::process::Command::new("sha256sum")
            .arg(www.join("big.bin"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&want),
        "4 MiB body changed in the relay"
    );
    let seen = std::fs::read_to_string(&http_log).unwrap();
    assert!(
        seen.contains("10.2.0.1 - -"),
        "the server sees the egress address: {seen}"
    );
    assert!(
        !seen.contains("10.1.0.2"),
        "the client's address never reaches the server: {seen}"
    );

    // Refused names: a TLS alert unrecognized_name, an HTTP 403.
    let (ok, _, err) = curl(
        &bed.h1,
        &[
            "--cacert",
            &ca,
            "--resolve",
            "blocked.accel.test:443:10.1.0.1",
            "https://blocked.accel.test/",
        ],
    );
    assert!(
        !ok && err.contains("unrecognized name"),
        "denied name over TLS: {err}"
    );
    let (ok, _, err) = curl(
        &bed.h1,
        &[
            "--resolve",
            "other.test:443:10.1.0.1",
            "https://other.test/",
        ],
    );
    assert!(
        !ok && err.contains("unrecognized name"),
        "unlisted name over TLS: {err}"
    );
    let (_, code, _) = curl(
        &bed.h1,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            "other.test:80:10.1.0.1",
            "http://other.test/",
        ],
    );
    assert_eq!(code, "403", "unlisted name over HTTP");
    // Allowed, but the resolver refuses it: 502.
    let (_, code, _) = curl(
        &bed.h1,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            "missing.test:80:10.1.0.1",
            "http://missing.test/",
        ],
    );
    assert_eq!(code, "502", "allowed name that does not resolve");

    // A lost query is sent again half-way through resolve_timeout (3 s):
    // h2 drops DNS for the first half second, and the client still gets
    // its page, after the retry.
    require_program("nft", "nftables");
    let quiet = |on: bool| {
        let rules = if on {
            "add table inet lossy; add chain inet lossy in { type filter hook input priority 0; }; \
             add rule inet lossy in udp dport 53 drop"
        } else {
            "delete table inet lossy"
        };
        bed.h2.run(&["nft", rules]).unwrap();
    };
    let retry = |h1: &Netns| {
        curl(
            h1,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--resolve",
                "retry.accel.test:80:10.1.0.1",
                "http://retry.accel.test/",
            ],
        )
    };
    quiet(true);
    let t0 = Instant::now();
    let (code, err) = std::thread::scope(|s| {
        let fetch = s.spawn(|| retry(&bed.h1));
        std::thread::sleep(Duration::from_millis(500));
        quiet(false);
        let (_, code, err) = fetch.join().unwrap();
        (code, err)
    });
    assert_eq!(code, "200", "a lost query is retried: {err}");
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    // The answer is remembered for its TTL: the next client connects
    // without a query, even with the resolver gone quiet again.
    quiet(true);
    let t0 = Instant::now();
    let (_, code, err) = retry(&bed.h1);
    quiet(false);
    assert_eq!(code, "200", "remembered: {err}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // A crafted ClientHello with a 3000-byte key share, in records of 100,
    // 1, 7 and 600 bytes, written as separate TCP segments: the real
    // server's answer (a handshake record, not our alert) comes back.
    let hello = strait_sni::testing::client_hello(Some(b"split.accel.test"), 3000);
    let records = strait_sni::testing::records(&hello, &[100, 1, 7, 600]);
    assert!(records.len() > 3000 && records.len() <= strait_sni::MAX_HEAD);
    let reply = bed
        .h1
        .enter(move || {
            let mut s = TcpStream::connect_timeout(
                &"10.1.0.1:443".parse().unwrap(),
                Duration::from_secs(3),
            )
            .unwrap();
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for chunk in records.chunks(700) {
                s.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut reply = [0u8; 7];
            s.read_exact(&mut reply)?;
            // The server now waits for a second ClientHello; the proxy
            // closes the silent connection after idle_timeout.
            s.set_read_timeout(Some(Duration::from_secs(8)))?;
            let mut last = Instant::now();
            let mut rest = [0u8; 4096];
            while s.read(&mut rest)? > 0 {
                last = Instant::now();
            }
            Ok::<_, std::io::Error>((reply, last.elapsed()))
        })
        .unwrap()
        .expect("an answer to the split ClientHello, then a close");
    assert_eq!(
        reply.0[0], 22,
        "the server's handshake record, not an alert: {reply:?}"
    );
    assert!(
        reply.1 >= Duration::from_millis(2500),
        "closed after the 3 s idle timeout: {reply:?}"
    );

    // Allowed and resolved, but nothing listens on the upstream's port
    // (the listener's, 8443): TLS alert internal_error (80).
    let alert = bed
        .h1
        .enter(|| {
            let hello = strait_sni::testing::client_hello(Some(b"www.accel.test"), 32);
            let mut s = TcpStream::connect("10.1.0.1:8443").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&strait_sni::testing::records(&hello, &[usize::MAX]))
                .unwrap();
            let mut b = [0u8; 7];
            s.read_exact(&mut b).map(|_| b)
        })
        .unwrap()
        .expect("an alert");
    assert_eq!(alert, [21, 3, 3, 0, 2, 2, 80], "fatal internal_error");

    // A client that never completes its head is closed after head_timeout.
    let cut = bed
        .h1
        .enter(|| {
            let mut s = TcpStream::connect("10.1.0.1:443").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
            s.write_all(&[22, 3, 1, 0, 200, 1]).unwrap();
            let t = Instant::now();
            let mut b = [0u8; 16];
            let n = s.read(&mut b);
            (n.map_err(|e| e.kind()), t.elapsed())
        })
        .unwrap();
    assert!(matches!(cut.0, Ok(0)), "closed, not answered: {cut:?}");
    assert!(cut.1 >= Duration::from_millis(1500), "{cut:?}");

    let c = bed.daemon.json(&["show", "proxy"]);
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    assert_eq!(n("relayed_tls"), 2, "{c}");
    assert_eq!(n("relayed_http"), 4, "{c}");
    assert!(n("resolve_cached") >= 1, "{c}");
    assert_eq!(n("refused_name"), 3, "{c}");
    assert_eq!(n("resolve_failed"), 1, "{c}");
    assert_eq!(n("head_timeout"), 1, "{c}");
    assert!(n("bytes_down") > 4 << 20, "{c}");
    within("every connection closed", Duration::from_secs(5), || {
        bed.daemon.json(&["show", "proxy"])["active"] == 0
    });
    assert_eq!(n("connect_failed"), 1, "{c}");
    assert_eq!(n("idle_closed"), 1, "{c}");

    // max_connections = 8: a ninth client is closed on accept.
    let capped = bed
        .h1
        .enter(|| {
            let held: Vec<_> = (0..8)
                .map(|_| TcpStream::connect("10.1.0.1:80").unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let mut ninth = TcpStream::connect("10.1.0.1:80").unwrap();
            ninth
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let mut b = [0u8; 1];
            let r = ninth.read(&mut b).map_err(|e| e.kind());
            drop(held);
            r
        })
        .unwrap();
    assert!(
        matches!(capped, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "{capped:?}"
    );
    let c = bed.daemon.json(&["show", "proxy"]);
    assert_eq!(c["over_capacity"], 1, "{c}");
    let text = bed.daemon.ctl(&["show", "proxy"]);
    assert!(
        text.contains("refused_name") && text.contains('3'),
        "{text}"
    );
    eprintln!("proxy test took {:?}", started.elapsed());
}

/// The upstream of the benchmark on h2:443: per connection, reads the
/// ClientHello and answers by its name: `cps.*` gets 64 bytes, `bulk.*`
/// 256 MiB; then closes.
fn bench_upstream(h2: &Netns) -> std::thread::JoinHandle<()> {
    let h2 = h2.clone();
    std::thread::spawn(move || {
        h2.enter(|| {
            let l = std::net::TcpListener::bind("10.2.0.2:443").unwrap();
            l.set_nonblocking(false).unwrap();
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut head = vec![0u8; 16384];
                    let mut n = 0;
                    let name = loop {
                        match s.read(&mut head[n..]) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                        match strait_sni::sniff(&head[..n]) {
                            strait_sni::Sniff::NeedMore => continue,
                            strait_sni::Sniff::Tls(name) => break name,
                            _ => return,
                        }
                    };
                    let chunk = [0x5au8; 65536];
                    let total = if name.as_str().starts_with("bulk.") {
                        4096
                    } else {
                        0
                    };
                    if total == 0 {
                        let _ = s.write_all(&chunk[..64]);
                    }
                    for _ in 0..total {
                        if s.write_all(&chunk).is_err() {
                            return;
                        }
                    }
                });
            }
        })
        .unwrap();
    })
}

/// Connections/s through `proxy` with `threads` clients for `secs`.
fn bench_cps(h1: &Netns, proxy: &'static str, threads: usize, secs: u64) -> f64 {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hello = strait_sni::testing::records(
        &strait_sni::testing::client_hello(Some(b"cps.bench.test"), 32),
        &[usize::MAX],
    );
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (h1, done, hello) = (h1.clone(), done.clone(), hello.clone());
            std::thread::spawn(move || {
                h1.enter(move || {
                    let end = Instant::now() + Duration::from_secs(secs);
                    while Instant::now() < end {
                        let Ok(mut s) = TcpStream::connect(proxy) else {
                            continue;
                        };
                        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                        if s.write_all(&hello).is_err() {
                            continue;
                        }
                        let mut b = [0u8; 128];
                        let mut got = 0;
                        while let Ok(k) = s.read(&mut b) {
                            if k == 0 {
                                break;
                            }
                            got += k;
                        }
                        if got == 64 {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
                .unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Gbit/s of `streams` parallel 256 MiB downloads through `proxy`.
fn bench_bulk(h1: &Netns, proxy: &'static str, streams: usize) -> f64 {
    let hello = strait_sni::testing::records(
        &strait_sni::testing::client_hello(Some(b"bulk.bench.test"), 32),
        &[usize::MAX],
    );
    let start = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (h1, hello) = (h1.clone(), hello.clone());
            std::thread::spawn(move || {
                h1.enter(move || {
                    let mut s = TcpStream::connect(proxy).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.write_all(&hello).unwrap();
                    let mut b = vec![0u8; 1 << 16];
                    let mut got = 0u64;
                    while let Ok(k) = s.read(&mut b) {
                        if k == 0 {
                            break;
                        }
                        got += k as u64;
                    }
                    got
                })
                .unwrap()
            })
        })
        .collect();
    let bytes: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        bytes,
        streams as u64 * (256 << 20),
        "every download complete"
    );
    bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// The proxy against nginx's stream `ssl_preread` (Debian nginx +
/// libnginx-mod-stream, one worker process, as the proxy runs on one
/// thread), on the same bed and in the same run: both listen on dp's
/// 10.1.0.1 (kernel sockets behind the host path), resolve with dnsmasq
/// and connect from 10.2.0.1 to the same upstream on h2.
///
/// `cargo test -p strait-daemon --release --test proxy -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn benchmark_against_nginx_ssl_preread() {
    require_program("dnsmasq", "dnsmasq-base");
    require_program("nginx", "nginx");
    assert!(
        Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists(),
        "needs libnginx-mod-stream"
    );
    let config = CONFIG
        .replace(
            r#"allow = ["*.accel.test", "plain.test", "missing.test"]"#,
            r#"allow = ["*.bench.test"]"#,
        )
        .replace("max_connections = 8", "max_connections = 4096")
        // Both proxies sit behind the same host path: lift its policer
        // (20 000 frames/s per interface, 0.23 Gbit/s of full segments)
        // so the figure is the proxies', as the DNS bench does.
        .replace(
            "poll = \"adaptive\"\n",
            "poll = \"adaptive\"\nhost_punt_rate = 2000000\nhost_punt_burst = 100000\n",
        );
    let bed = ForwardBed::new("proxy-bench", &config);
    let dir = bed.dir.clone();
    for (ns, ip, tap) in [
        (&bed.h1, "10.1.0.2", "st-left"),
        (&bed.h2, "10.2.0.2", "st-right"),
    ] {
        let mac = ns
            .mac("eth0")
            .unwrap()
            .map(|b| format!("{b:02x}"))
            .join(":");
        bed.dp
            .ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac,
                "dev",
                tap,
                "nud",
                "permanent",
            ])
            .unwrap();
    }
    let _dns = spawn(
        &bed.h2,
        "dnsmasq",
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            "--listen-address=10.2.0.2",
            "--port=53",
            "--local-ttl=300",
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--address=/bench.test/10.2.0.2",
        ],
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 8192; }}\n\
             stream {{\n  resolver 10.2.0.2 ipv6=off;\n\
             server {{\n    listen 10.1.0.1:9443;\n    ssl_preread on;\n\
             proxy_pass $ssl_preread_server_name:443;\n    proxy_bind 10.2.0.1;\n  }}\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let _nginx = spawn(
        &bed.dp,
        "nginx",
        &[
            "nginx",
            "-e",
            dir.join("nginx-error.log").to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ],
    );
    let _upstream = bench_upstream(&bed.h2);
    within(
        "nginx and the upstream listening",
        Duration::from_secs(10),
        || port_open(&bed.dp, "10.1.0.1:9443") && port_open(&bed.h2, "10.2.0.2:443"),
    );
    let (strait, nginx) = ("10.1.0.1:443", "10.1.0.1:9443");
    // Warm both (neighbours, resolver).
    bench_cps(&bed.h1, strait, 2, 1);
    bench_cps(&bed.h1, nginx, 2, 1);
    println!("| proxy | new connections/s (32 clients, 4 s) | 1 stream Gbit/s (256 MiB) | 4 streams Gbit/s |");
    println!("|---|---|---|---|");
    for (label, addr) in [("strait", strait), ("nginx ssl_preread", nginx)] {
        let cps = bench_cps(&bed.h1, addr, 32, 4);
        let one = bench_bulk(&bed.h1, addr, 1);
        let four = bench_bulk(&bed.h1, addr, 4);
        println!("| {label} | {cps:.0} | {one:.2} | {four:.2} |");
    }
    println!("{}", bed.daemon.ctl(&["show", "proxy"]));
}
