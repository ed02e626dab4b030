//! Prices for data without a `cost` column, and the token estimate that turns a prompt into a
//! cost.
//!
//! A prices file maps model names (as the data spells them) to US$ per million tokens, in JSON
//! (`{"gpt-4": {"input_per_mtok": 30, "output_per_mtok": 60}}`) or TOML
//! (`["gpt-4"]` tables with the same two keys). A call is estimated at `ceil(chars / 4)` prompt
//! tokens (the usual English average) and `--output-tokens` answer tokens (default 300), since the
//! answer's real length is not in the data.
//!
//! Not for: the catalog's prices; a caller that has them passes them in as [`Prices`].

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;

/// Characters per token in the prompt-length estimate.
pub const CHARS_PER_TOKEN: f64 = 4.0;
/// Answer tokens assumed per call when costs are estimated from prices.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 300;

/// US$ per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Model name → price.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(pub HashMap<String, Price>);

impl Prices {
    /// Reads a JSON or TOML prices file (by extension; otherwise JSON is tried first).
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let as_json =
            || serde_json::from_str::<HashMap<String, Price>>(&text).map_err(|e| e.to_string());
        let as_toml = || toml::from_str::<HashMap<String, Price>>(&text).map_err(|e| e.to_string());
        let parsed = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => as_json(),
            Some("toml") => as_toml(),
            _ => as_json().or_else(|_| as_toml()),
        };
        let map =
            parsed.map_err(|e| EvalError::Args(format!("prices file {}: {e}", path.display())))?;
        if let Some((model, _)) = map
            .iter()
            .find(|(_, p)| !(p.input_per_mtok >= 0.0 && p.output_per_mtok >= 0.0))
        {
            return Err(EvalError::Args(format!(
                "prices file {}: {model} has a negative price",
                path.display()
            )));
        }
        Ok(Prices(map))
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        self.0.get(model).copied()
    }
}

/// The estimated US$ cost of sending `prompt` and receiving `output_tokens`.
pub fn estimated_cost(price: Price, prompt: &str, output_tokens: u32) -> f64 {
    let input_tokens = (prompt.chars().count() as f64 / CHARS_PER_TOKEN).ceil();
    (input_tokens * price.input_per_mtok + f64::from(output_tokens) * price.output_per_mtok) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_prompt_and_answer_tokens() {
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        };
        // 9 chars → 3 tokens; 3 × 1 + 10 × 2 = 23 per million.
        assert!((estimated_cost(price, "123456789", 10) - 23e-6).abs() < 1e-15);
    }

    #[test]
    fn reads_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("p.toml");
        std::fs::write(
            &toml_path,
            "[\"org/model\"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n",
        )
        .unwrap();
        let json_path = dir.path().join("p.json");
        std::fs::write(
            &json_path,
            r#"{"org/model": {"input_per_mtok": 1, "output_per_mtok": 2}}"#,
        )
        .unwrap();
        assert_eq!(
            Prices::load(&toml_path).unwrap(),
            Prices::load(&json_path).unwrap()
        );
    }
}
