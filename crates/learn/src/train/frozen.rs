//! Pooled embeddings from a fixed pretrained encoder (e.g. all-MiniLM-L6-v2), computed once with
//! candle's stock `BertModel` exactly as the classifier computes them, and cached on disk: at
//! ~40 ms a prompt on two cores, re-embedding for every recipe change would dominate.
//!
//! The cache is one file per (encoder directory, token budget): records of a 64-bit prompt hash
//! and the pooled vector, appended as they are computed, so an interrupted run resumes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::TrainError;
use super::data::stable_hash;
use super::progress::Progress;
use triage_core::classifier::{CONFIG_FILE, mean_pool, pad_batch};

const BATCH: usize = 16;

/// The `[prompts, hidden]` table of pooled outputs for `tokens` (one id list per prompt; `keys`,
/// the prompt texts, name them in the cache).
pub fn embed(
    dir: &Path,
    tokens: &[Vec<u32>],
    keys: &[String],
    pad: u32,
    cache_dir: &Path,
    quiet: bool,
    device: &Device,
) -> Result<Tensor, TrainError> {
    let io = |path: &Path, e: std::io::Error| TrainError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let config_path = dir.join(CONFIG_FILE);
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| io(&config_path, e))?;
    let config: Config = serde_json::from_str(&config_text).map_err(|e| TrainError::File {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let hidden = config.hidden_size;
    let budget = tokens.iter().map(Vec::len).max().unwrap_or(0);
    std::fs::create_dir_all(cache_dir).map_err(|e| io(cache_dir, e))?;
    let identity = format!(
        "{}|{budget}|{hidden}",
        std::fs::canonicalize(dir)
            .unwrap_or(dir.to_path_buf())
            .display()
    );
    let cache_path: PathBuf = cache_dir.join(format!(
        "frozen-{:016x}.bin",
        stable_hash("frozen", &identity)
    ));
    let mut cached = read_cache(&cache_path, hidden).map_err(|e| io(&cache_path, e))?;

    let hashes: Vec<u64> = keys.iter().map(|k| stable_hash("embed", k)).collect();
    let mut missing: Vec<usize> = (0..tokens.len())
        .filter(|&i| !cached.contains_key(&hashes[i]))
        .collect();
    if !missing.is_empty() {
        missing.sort_by_key(|&i| tokens[i].len());
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }?;
        let model = BertModel::load(vb, &config)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cache_path)
            .map_err(|e| io(&cache_path, e))?;
        let mut writer = BufWriter::new(file);
        let mut bar = Progress::new(missing.len() as u64, "embedding", "prompts", quiet);
        for chunk in missing.chunks(BATCH) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|&i| tokens[i].clone()).collect();
            let (ids, mask) = pad_batch(&ids, pad, device)?;
            let hidden_states = model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
            let pooled = mean_pool(&hidden_states, &mask)?.to_vec2::<f32>()?;
            for (&i, vector) in chunk.iter().zip(pooled) {
                writer
                    .write_all(&hashes[i].to_le_bytes())
                    .map_err(|e| io(&cache_path, e))?;
                for x in &vector {
                    writer
                        .write_all(&x.to_le_bytes())
                        .map_err(|e| io(&cache_path, e))?;
                }
                cached.insert(hashes[i], vector);
            }
            writer.flush().map_err(|e| io(&cache_path, e))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
    }
    let flat: Vec<f32> = hashes
        .iter()
        .flat_map(|h| cached[h].iter().copied())
        .collect();
    Ok(Tensor::from_vec(flat, (tokens.len(), hidden), device)?)
}

fn read_cache(path: &Path, hidden: usize) -> std::io::Result<HashMap<u64, Vec<f32>>> {
    let mut map = HashMap::new();
    let Ok(mut file) = File::open(path) else {
        return Ok(map);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let record = 8 + 4 * hidden;
    let whole = bytes.len() / record * record;
    if whole < bytes.len() {
        // A torn last record (an interrupted run): cut it so that appends stay aligned.
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
    }
    for chunk in bytes.chunks_exact(record) {
        let key = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        let vector = chunk[8..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        map.insert(key, vector);
    }
    Ok(map)
}
