//! Loads a .woq file, runs woq_matmul on fp32 activations read from a raw
//! little-endian file and prints Y as fp32 bit patterns, like
//! examples/c/matmul_vectors.c on the same shared vectors (examples/data).
//!
//!     WOQ_LIB_DIR=build cargo run --offline -- VECTORS.woq X.f32 [TENSOR]

use std::process::ExitCode;

fn run(args: &[String]) -> Result<(), String> {
    if args.len() < 2 {
        return Err("usage: woq-example VECTORS.woq X.f32 [TENSOR]".into());
    }
    let name = args.get(2).map(String::as_str).unwrap_or("proj.weight");
    let file = woq::File::open(&args[0]).map_err(|e| e.to_string())?;
    let context = woq::Context::new(woq::Backend::Cpu, 0).map_err(|e| e.to_string())?;
    let tensor = woq::Tensor::load(&context, &file, name).map_err(|e| e.to_string())?;
    let (rows, cols) = tensor.shape();
    let raw = std::fs::read(&args[1]).map_err(|e| format!("{}: {e}", args[1]))?;
    let row_bytes = 4 * cols as usize;
    if raw.is_empty() || raw.len() % row_bytes != 0 {
        return Err(format!("{}: {} bytes are not rows of {cols} fp32 values", args[1], raw.len()));
    }
    let x: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let m = (raw.len() / row_bytes) as u64;
    let y = tensor.matmul(&x, m).map_err(|e| e.to_string())?;
    let infos = file.tensors().map_err(|e| e.to_string())?;
    if let Some(info) = infos.iter().find(|i| i.name == name) {
        println!(
            "libwoq {}: {name} [{rows} x {cols}], {}-bit, group {}; X [{m} x {cols}]",
            woq::version(),
            info.bits,
            info.group_size
        );
    }
    for (r, row) in y.chunks(rows as usize).enumerate() {
        let words: Vec<String> = row.iter().map(|v| format!("{:08x}", v.to_bits())).collect();
        println!("y {r}: {}", words.join(" "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
