//! Writes every target's seed inputs into its corpus directory:
//! `cargo run -p strait-fuzz-targets --example write_corpus [-- <fuzz/corpus>]`
//! Seeds are named `seed-<name>`; files libFuzzer adds are named by hash.

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned());
    for target in strait_fuzz_targets::TARGETS {
        let dir = format!("{root}/{}", target.name);
        std::fs::create_dir_all(&dir)?;
        let seeds = (target.seeds)();
        for (i, (name, bytes)) in seeds.iter().enumerate() {
            // Seeds must run cleanly before they are written.
            (target.run)(bytes);
            std::fs::write(format!("{dir}/seed-{i:02}-{name}"), bytes)?;
        }
        println!("{}: wrote {} seeds to {dir}", target.name, seeds.len());
    }
    Ok(())
}
