//! The pieces of the `straitd` configurations the benchmark writes, one
//! function per TOML block, so every part describes its daemon the same way
//! and a change to a block (a key renamed in `docs/CONFIG.md`) is made once.
//!
//! Each block is returned as text that ends with a newline; blocks after
//! the first start with an empty line, so concatenating them gives the
//! layout a person would write.

use std::fmt::Write as _;

/// `[engine]`: one worker pinned to `cpu`, polling in `poll` mode. Every
/// daemon of the benchmark has exactly one worker: the figures are per
/// core.
pub fn engine(cpu: usize, poll: &str) -> String {
    format!("[engine]\nworkers = 1\ncores = [{cpu}]\npoll = \"{poll}\"\n")
}

/// `[[interface]]` `name` with one address (`10.1.0.1/24`).
pub fn interface(name: &str, address: &str) -> String {
    format!("\n[[interface]]\nname = \"{name}\"\naddresses = [\"{address}\"]\n")
}

/// One direction of a static AES-128-GCM SA: its SPI and its key (key ||
/// 4-byte salt in hex, RFC 4106 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticSa<'a> {
    /// Security parameter index.
    pub spi: u32,
    /// Key and salt, hex.
    pub key: &'a str,
}

/// `[[tunnel]]` `name` from `local` to `remote` carrying `prefix`, with
/// static SAs and no keepalives (a keepalive would be a frame the
/// generator does not count).
pub fn static_tunnel(
    name: &str,
    local: &str,
    remote: &str,
    prefix: &str,
    outbound: StaticSa<'_>,
    inbound: StaticSa<'_>,
) -> String {
    let mut s = format!(
        "\n[[tunnel]]\nname = \"{name}\"\nlocal = \"{local}\"\nremote = \"{remote}\"\nprefixes = [\"{prefix}\"]\nkeepalive = 0\n"
    );
    for (dir, sa) in [("outbound", outbound), ("inbound", inbound)] {
        let _ = writeln!(
            s,
            "{dir} = {{ spi = {}, cipher = \"aes128-gcm\", key = \"{}\" }}",
            sa.spi, sa.key
        );
    }
    s
}

/// The first lines of a `[[nat]]` rule: `kind` (`masquerade`, `snat`) for
/// sources in `source` leaving by `out_interface`. Callers add the lines
/// their kind needs (`addresses`, `ports`) after it.
pub fn nat_rule(name: &str, kind: &str, source: &str, out_interface: &str) -> String {
    format!(
        "[[nat]]\nname = \"{name}\"\nkind = \"{kind}\"\nsource = \"{source}\"\nout_interface = \"{out_interface}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_concatenate_into_sections_separated_by_one_empty_line() {
        let c = engine(1, "spin") + &interface("left", "10.1.0.1/24");
        assert_eq!(
            c,
            "[engine]\nworkers = 1\ncores = [1]\npoll = \"spin\"\n\n\
             [[interface]]\nname = \"left\"\naddresses = [\"10.1.0.1/24\"]\n"
        );
    }

    #[test]
    fn tunnel_names_both_sas_with_their_own_spi_and_key() {
        let t = static_tunnel(
            "hub",
            "203.0.113.2",
            "203.0.113.1",
            "10.2.0.0/16",
            StaticSa { spi: 1, key: "aa" },
            StaticSa { spi: 2, key: "bb" },
        );
        assert!(t.starts_with("\n[[tunnel]]\nname = \"hub\"\n"));
        assert!(t.contains("prefixes = [\"10.2.0.0/16\"]\nkeepalive = 0\n"));
        assert!(t.contains("outbound = { spi = 1, cipher = \"aes128-gcm\", key = \"aa\" }\n"));
        assert!(t.ends_with("inbound = { spi = 2, cipher = \"aes128-gcm\", key = \"bb\" }\n"));
    }

    #[test]
    fn nat_rule_leaves_room_for_kind_specific_lines() {
        let r = nat_rule("lan-out", "masquerade", "10.1.0.0/16", "wan");
        assert!(r.starts_with("[[nat]]\n"));
        assert!(r.ends_with("out_interface = \"wan\"\n"));
    }
}
