//! Writes the hand-built sample frames into the fuzz corpus directory:
//! `cargo run -p strait-wire --example write_fuzz_corpus -- fuzz/corpus/parse_all`

#[path = "../tests/common/frames.rs"]
mod frames;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/parse_all".to_owned());
    std::fs::create_dir_all(&dir)?;
    let samples = frames::valid_samples()
        .into_iter()
        .chain(frames::invalid_samples());
    let mut count = 0;
    for sample in samples {
        std::fs::write(format!("{dir}/{}.bin", sample.name), &sample.bytes)?;
        count += 1;
    }
    println!("wrote {count} samples to {dir}");
    Ok(())
}
