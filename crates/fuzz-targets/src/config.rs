//! `config`: the TOML configuration parser, its validation and the table
//! build (interfaces resolved by a fake link) over arbitrary text, and the
//! parser of SA state records (`state_dir/sa/*`), and the same text as one
//! route, NAT rule or SA on its own (`Config::parse_item`, what the C ABI
//! takes).
//!
//! Invariants: no panic; an error always carries a message, and a line
//! and column, when given, lie inside the text.

use strait_dataplane::{Config, ConfigError, NatRuleConfig, RouteConfig, SaEntryConfig};

fn check_error(e: &ConfigError, text: &str) {
    let shown = e.to_string();
    assert!(
        !shown.trim().is_empty(),
        "an error without a message: {e:?}"
    );
    match e {
        ConfigError::Parse { message, span, .. } => {
            assert!(
                !message.trim().is_empty(),
                "a parse error without a message: {e:?}"
            );
            check_span(span.as_ref(), text, e);
        }
        ConfigError::Invalid {
            item, reason, span, ..
        } => {
            assert!(
                !reason.trim().is_empty(),
                "an invalid item without a reason: {e:?}"
            );
            assert!(!item.is_empty() || !shown.is_empty(), "no item: {e:?}");
            check_span(span.as_ref(), text, e);
        }
        ConfigError::Io { .. } => panic!("parsing text read a file: {e:?}"),
    }
}

fn check_span(span: Option<&strait_dataplane::Span>, text: &str, e: &ConfigError) {
    let Some(span) = span else { return };
    let lines = 1 + text.bytes().filter(|b| *b == b'\n').count() as u32;
    assert!(
        span.line >= 1 && span.line <= lines,
        "line {} of {lines}: {e:?}",
        span.line
    );
    assert!(span.column >= 1, "column 0: {e:?}");
    assert!(
        span.bytes.start <= text.len(),
        "span {:?} past the text: {e:?}",
        span.bytes
    );
}

/// The target body.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // The same text as an SA state record (the other file the daemon
    // reads back): refused or round-tripped exactly.
    strait_dataplane::fuzzing::sa_record(&text);
    if let Err(e) = Config::parse_item::<RouteConfig>(&text, "route") {
        check_error(&e, &text);
    }
    if let Err(e) = Config::parse_item::<NatRuleConfig>(&text, "nat rule") {
        check_error(&e, &text);
    }
    if let Err(e) = Config::parse_item::<SaEntryConfig>(&text, "SA") {
        check_error(&e, &text);
    }
    match Config::parse(&text, "fuzz.toml") {
        Err(e) => check_error(&e, &text),
        Ok(config) => {
            if let Err(e) = strait_dataplane::fuzzing::build_tables(&config, "fuzz.toml") {
                check_error(&e, &text);
            }
        }
    }
}

/// Seeds: the example configurations, the pipeline target's sites, and a
/// few small ones that fail in different places.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "example-branch",
            include_bytes!("../../../examples/branch.toml").to_vec(),
        ),
        (
            "example-hub",
            include_bytes!("../../../examples/hub.toml").to_vec(),
        ),
    ];
    for (name, text) in crate::pipeline::config_texts("[engine]\nworkers = 1\n") {
        seeds.push((name, text.into_bytes()));
    }
    let small: [(&'static str, &str); 11] = [
        ("empty", ""),
        ("bad-prefix", "[[interface]]\nname = \"lan\"\naddresses = [\"10.0.0.1/24\"]\n[[route]]\nprefix = \"10.9.0.0/33\"\nvia = [\"10.0.0.2\"]\n"),
        ("unknown-field", "[engine]\nworkers = 1\nbogus = true\n"),
        ("bad-syntax", "[[interface]\nname = \"lan\"\n"),
        ("nat-without-interface", "[[nat]]\nname = \"x\"\nkind = \"masquerade\"\nsource = \"10.0.0.0/8\"\nout_interface = \"wan\"\n"),
        ("tunnel-bad-key", "[[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\"]\n[[tunnel]]\nname = \"t\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.1\"\nprefixes = [\"10.2.0.0/16\"]\noutbound = { spi = 4097, cipher = \"aes128-gcm\", key = \"00\" }\ninbound = { spi = 8194, cipher = \"aes128-gcm\", key = \"00\" }\n"),
        ("item-route", "prefix = \"10.9.0.0/16\"\nvia = [\"10.2.0.2\"]\n"),
        ("item-nat", "name = \"egress\"\nkind = \"snat\"\nsource = \"10.1.0.0/24\"\nout_interface = \"right\"\naddresses = [\"10.2.0.1\"]\n"),
        ("item-sa", "spi = 4099\ncipher = \"aes128-gcm\"\nkey = \"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3\"\nsoft_seconds = 1\n"),
        ("load-balancer", "[[interface]]\nname = \"wan\"\naddresses = [\"198.51.100.1/24\"]\n[[load_balancer]]\nname = \"web\"\nprotocol = \"tcp\"\naddress = \"203.0.113.10:80\"\nbackends = [{ address = \"10.1.0.2:8000\", weight = 2 }, { address = \"10.2.0.2:8000\" }]\nwhen_all_down = \"keep-last\"\n[load_balancer.check]\nkind = \"http\"\npath = \"/id\"\nexpect_body = \"ok\"\n"),
        ("load-balancer-bad-table", "[[load_balancer]]\nname = \"dns\"\nprotocol = \"udp\"\naddress = \"203.0.113.12:53\"\nbackends = [{ address = \"10.1.0.2:53\" }]\ntable_size = 65536\n[load_balancer.check]\nkind = \"dns\"\n"),
    ];
    for (name, text) in small {
        seeds.push((name, text.as_bytes().to_vec()));
    }
    seeds
}
