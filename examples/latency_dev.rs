//! TEMPORARY (train helper): p50 classification latency of a model directory.
use std::time::Instant;

use candle_core::Device;
use triage::classifier::{Classifier, ClassifierInput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = std::env::args().nth(1).expect("model dir");
    let classifier = Classifier::load_dir(std::path::Path::new(&dir), &Device::Cpu).unwrap();
    let words = "the router must decide which model answers this question about rust code and math proofs quickly";
    for target in [32usize, 128, 512] {
        let mut text = String::new();
        loop {
            let n = classifier.token_ids(&text).unwrap().len();
            if n >= target.min(classifier.metadata.max_tokens) {
                break;
            }
            text.push_str(words.split(' ').nth(text.len() % 17).unwrap());
            text.push(' ');
        }
        let input = ClassifierInput::from_text(text.clone());
        let tokens = classifier.predict_one(&input).unwrap().tokens;
        for _ in 0..20 {
            classifier.predict_one(&input).unwrap();
        }
        let mut times: Vec<f64> = (0..300)
            .map(|_| {
                let t = Instant::now();
                classifier.predict_one(&input).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{dir}: {tokens} tokens: p50 {:.3} ms, p90 {:.3} ms, min {:.3} ms", times[150], times[270], times[0]);
    }
}
