//! A WordPiece vocabulary learnt from the training prompts, saved as a BERT-style
//! `tokenizer.json` (BERT normaliser with lowercasing, BERT pre-tokenizer, `##` continuations).
//!
//! The merges are learnt here rather than with the `tokenizers` crate's trainer: that one assigns
//! token ids in hash-map order, so two runs on the same text give different vocabularies, and a
//! fixed seed must give the same model twice. This one breaks every tie by token id, and ids are
//! assigned in sorted order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer,
};

use super::TrainError;

/// Special tokens, at ids 0.. in this order (`[PAD]` = 0 is BERT's `pad_token_id`).
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const PREFIX: &str = "##";
/// A pair must occur at least this often to become a token.
const MIN_PAIR_COUNT: u64 = 2;

/// Learns a vocabulary of at most `vocab_size` tokens (special tokens included) from `texts`,
/// keeping the `alphabet` most frequent characters.
pub fn train_tokenizer<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    vocab_size: usize,
    alphabet: usize,
) -> Result<Tokenizer, TrainError> {
    let words = count_words(texts)?;
    let vocab = learn_vocab(&words, vocab_size, alphabet);
    build_tokenizer(vocab)
}

/// Words after BERT normalisation and pre-tokenization, with counts, in sorted order.
fn count_words<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, u64>, TrainError> {
    let normalizer = BertNormalizer::default();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for text in texts {
        let mut pretokenized = PreTokenizedString::from(text);
        pretokenized
            .normalize(|s| normalizer.normalize(s))
            .and_then(|()| BertPreTokenizer.pre_tokenize(&mut pretokenized))
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        for (word, _, _) in pretokenized.get_splits(OffsetReferential::Original, OffsetType::Char) {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    Ok(counts.into_iter().collect())
}

/// The WordPiece vocabulary: special tokens, the alphabet (each character alone and as a `##`
/// continuation), then merged pieces in the order learnt.
fn learn_vocab(words: &BTreeMap<String, u64>, vocab_size: usize, alphabet: usize) -> Vec<String> {
    let mut char_counts: BTreeMap<char, u64> = BTreeMap::new();
    for (word, count) in words {
        for c in word.chars() {
            *char_counts.entry(c).or_default() += count;
        }
    }
    let mut chars: Vec<(char, u64)> = char_counts.into_iter().collect();
    chars.sort_by_key(|&(c, n)| (Reverse(n), c));
    chars.truncate(alphabet);
    chars.sort_by_key(|&(c, _)| c);

    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut intern = |token: String, tokens: &mut Vec<String>| -> u32 {
        *ids.entry(token.clone()).or_insert_with(|| {
            tokens.push(token);
            tokens.len() as u32 - 1
        })
    };
    for &(c, _) in &chars {
        intern(c.to_string(), &mut tokens);
        intern(format!("{PREFIX}{c}"), &mut tokens);
    }
    // Words as symbol ids; a word with a character outside the alphabet becomes [UNK] anyway.
    let mut symbols: Vec<Vec<u32>> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for (word, &count) in words {
        let pieces: Option<Vec<u32>> = word
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let piece = if i == 0 {
                    c.to_string()
                } else {
                    format!("{PREFIX}{c}")
                };
                tokens_id(&tokens, &piece, &chars, i == 0)
            })
            .collect();
        if let Some(pieces) = pieces.filter(|p| p.len() > 1) {
            symbols.push(pieces);
            counts.push(count);
        }
    }
    let merges = Merges::new(&symbols, &counts);
    merges.run(symbols, &counts, &mut tokens, &mut intern, vocab_size);
    tokens
}

/// The id of a single-character piece: special tokens first, then two ids per alphabet char.
fn tokens_id(tokens: &[String], piece: &str, chars: &[(char, u64)], first: bool) -> Option<u32> {
    let c = piece.trim_start_matches(PREFIX).chars().next()?;
    let position = chars.binary_search_by_key(&c, |&(c, _)| c).ok()?;
    let id = (SPECIAL_TOKENS.len() + 2 * position + usize::from(!first)) as u32;
    debug_assert_eq!(tokens[id as usize], piece);
    Some(id)
}

type Pair = (u32, u32);

/// Pair counts kept up to date as merges rewrite the words, and a heap of candidates ordered by
/// count, then by the smaller pair (stale entries are re-checked when popped).
struct Merges {
    pair_counts: HashMap<Pair, u64>,
    pair_words: HashMap<Pair, Vec<usize>>,
    heap: BinaryHeap<(u64, Reverse<Pair>)>,
}

impl Merges {
    fn new(symbols: &[Vec<u32>], counts: &[u64]) -> Merges {
        let mut merges = Merges {
            pair_counts: HashMap::new(),
            pair_words: HashMap::new(),
            heap: BinaryHeap::new(),
        };
        for (w, word) in symbols.iter().enumerate() {
            for pair in word.windows(2) {
                let pair = (pair[0], pair[1]);
                *merges.pair_counts.entry(pair).or_default() += counts[w];
                merges.pair_words.entry(pair).or_default().push(w);
            }
        }
        let mut initial: Vec<(u64, Reverse<Pair>)> = merges
            .pair_counts
            .iter()
            .map(|(&p, &n)| (n, Reverse(p)))
            .collect();
        initial.sort_unstable();
        merges.heap.extend(initial);
        merges
    }

    fn run(
        mut self,
        mut symbols: Vec<Vec<u32>>,
        counts: &[u64],
        tokens: &mut Vec<String>,
        intern: &mut impl FnMut(String, &mut Vec<String>) -> u32,
        vocab_size: usize,
    ) {
        while tokens.len() < vocab_size {
            let Some((count, Reverse(pair))) = self.heap.pop() else {
                break;
            };
            let current = self.pair_counts.get(&pair).copied().unwrap_or(0);
            if current != count {
                if current > 0 {
                    self.heap.push((current, Reverse(pair)));
                }
                continue;
            }
            if count < MIN_PAIR_COUNT {
                break;
            }
            let merged = format!(
                "{}{}",
                tokens[pair.0 as usize],
                tokens[pair.1 as usize].trim_start_matches(PREFIX)
            );
            let new_id = intern(merged, tokens);
            let mut words = self.pair_words.remove(&pair).unwrap_or_default();
            words.sort_unstable();
            words.dedup();
            let mut touched: Vec<Pair> = Vec::new();
            for w in words {
                let word = &mut symbols[w];
                if !word.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                for p in word.windows(2) {
                    let p = (p[0], p[1]);
                    *self.pair_counts.get_mut(&p).expect("counted") -= counts[w];
                    touched.push(p);
                }
                *word = merge_word(word, pair, new_id);
                for p in word.windows(2) {
                    let p = (p[0], p[1]);
                    *self.pair_counts.entry(p).or_default() += counts[w];
                    self.pair_words.entry(p).or_default().push(w);
                    touched.push(p);
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for p in touched {
                let n = self.pair_counts[&p];
                if n > 0 && p != pair {
                    self.heap.push((n, Reverse(p)));
                }
            }
        }
    }
}

fn merge_word(word: &[u32], pair: Pair, new_id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            out.push(new_id);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    out
}

fn build_tokenizer(vocab: Vec<String>) -> Result<Tokenizer, TrainError> {
    let tokenizer_error = |e: tokenizers::Error| TrainError::Tokenizer(e.to_string());
    // Built through its serialised form: the builder wants the `ahash` map type.
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let model = serde_json::json!({
        "type": "WordPiece",
        "unk_token": "[UNK]",
        "continuing_subword_prefix": PREFIX,
        "max_input_chars_per_word": 100,
        "vocab": vocab,
    });
    let model: WordPiece = serde_json::from_str(&model.to_string())
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::default()))
        .map_err(tokenizer_error)?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(tokenizer_error)?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = [
        "Write a function that sorts a list in Python.",
        "Write a function that reverses a string.",
        "What is the capital of France? The capital is Paris.",
        "Solve 12 + 30 = ? Show the working.",
    ];

    #[test]
    fn vocabulary_is_deterministic_and_covers_the_text() {
        let a = train_tokenizer(TEXTS, 120, 100).unwrap();
        let b = train_tokenizer(TEXTS, 120, 100).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert!(a.get_vocab_size(true) <= 120);
        assert_eq!(a.token_to_id("[PAD]"), Some(0));
        assert_eq!(a.token_to_id("[CLS]"), Some(2));
        let encoding = a.encode("write a function", false).unwrap();
        assert!(!encoding.get_ids().contains(&1), "no [UNK] for seen words");
        assert!(
            encoding.get_ids().len() <= 4,
            "frequent words are single tokens: {:?}",
            encoding.get_tokens()
        );
    }

    #[test]
    fn merging_replaces_every_occurrence() {
        assert_eq!(merge_word(&[1, 2, 1, 2, 3], (1, 2), 9), [9, 9, 3]);
        assert_eq!(merge_word(&[1, 1, 1], (1, 1), 9), [9, 1]);
    }
}
