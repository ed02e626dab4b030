//! The default model, compiled into the binary so that `auto` works wherever the binary runs
//! (installed with `cargo install`, copied to a server, started by systemd). Cargo rebuilds it
//! when `models/default` changes.

use std::path::Path;

macro_rules! model_file {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../../../models/default/", $name)).as_slice(),
        )
    };
}

/// The files of `models/default` that inference reads, by name.
pub const FILES: [(&str, &[u8]); 5] = [
    model_file!("config.json"),
    model_file!("triage.json"),
    model_file!("tokenizer.json"),
    model_file!("model.safetensors"),
    model_file!("heads.safetensors"),
];

/// One file's bytes.
pub fn file(name: &str) -> &'static [u8] {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .expect("a file of the built-in model")
}

/// The safetensors files' bytes.
pub fn weights() -> impl Iterator<Item = &'static [u8]> {
    FILES
        .iter()
        .filter(|(name, _)| name.ends_with(".safetensors"))
        .map(|(_, bytes)| *bytes)
}

/// Writes the built-in model out as a model directory (for `train --init builtin`).
pub fn write_to(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in FILES {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
