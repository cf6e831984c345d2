//! Text to token ids and back, from a checkpoint's `tokenizer.json` (the `tokenizers` crate,
//! pure-Rust features), and the small byte-level BPE tokenizer of the built-in checkpoints.
//!
//! The client side of the pipeline: it tokenizes the prompt before embedding and encrypting,
//! and decodes the token it picks from the decrypted logits.

use crate::error::{ModelError, Result};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// File name of the tokenizer in a Hugging Face model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A tokenizer loaded from `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Loads `tokenizer.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join(TOKENIZER_FILE))
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds (BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of token ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.err(e))
    }

    /// The vocabulary entry of one id (as stored, e.g. `Ġthe`), if any.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string (e.g. `</s>`), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

/// GPT-2's byte-to-character map of byte-level BPE: printable bytes stand for themselves, the
/// others are shifted to U+0100 and up, so every byte is a visible character.
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("U+0100.. are valid characters")
}

/// Merges of the built-in tokenizer (a few frequent English pairs, so that the BPE model is
/// exercised); each adds one token after the 256 byte tokens.
const TINY_MERGES: [(&str, &str); 10] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("Ġ", "a"),
    ("o", "n"),
    ("r", "e"),
    ("Ġ", "s"),
];

/// Beginning-of-sequence token of the built-in tokenizer.
pub const TINY_BOS: &str = "<s>";
/// End-of-sequence token of the built-in tokenizer.
pub const TINY_EOS: &str = "</s>";

/// Vocabulary size of the built-in tokenizer: 256 bytes, the merges, BOS and EOS.
pub const TINY_VOCAB: usize = 256 + TINY_MERGES.len() + 2;

/// Ids of BOS and EOS in the built-in tokenizer.
pub fn tiny_special_ids() -> (u32, u32) {
    let base = (256 + TINY_MERGES.len()) as u32;
    (base, base + 1)
}

/// The `tokenizer.json` of the built-in checkpoints: byte-level BPE (GPT-2 pre-tokenizer and
/// decoder, as LLaMA 3 and bitnet-b1.58-2B-4T use), ids 0..255 for the bytes in order, then the
/// merges, then `<s>` and `</s>`; the post-processor prepends `<s>`.
pub fn tiny_tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_to_char(b).to_string(), json!(b));
    }
    for (i, (l, r)) in TINY_MERGES.iter().enumerate() {
        vocab.insert(format!("{l}{r}"), json!(256 + i));
    }
    let merges: Vec<String> = TINY_MERGES
        .iter()
        .map(|(l, r)| format!("{l} {r}"))
        .collect();
    let (bos, eos) = tiny_special_ids();
    let added = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(bos, TINY_BOS), added(eos, TINY_EOS)],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": TINY_BOS, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": TINY_BOS, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": TINY_BOS, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {TINY_BOS: {"id": TINY_BOS, "ids": [bos], "tokens": [TINY_BOS]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2s() {
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(b' '), 'Ġ'); // U+0120
        assert_eq!(byte_to_char(b'\n'), 'Ċ'); // U+010A
        assert_eq!(byte_to_char(0xAD), 'Ń'); // U+0143
        let mut all: Vec<char> = (0..=255u8).map(byte_to_char).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn tiny_tokenizer_round_trips() {
        let dir = std::env::temp_dir().join(format!("ensi-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKENIZER_FILE);
        std::fs::write(&path, tiny_tokenizer_json().to_string()).unwrap();
        let tok = Tokenizer::from_file(&path).unwrap();
        assert_eq!(tok.vocab_size(), TINY_VOCAB);
        let text = "the cat sat on the mat, naïvely.";
        let ids = tok.encode(text).unwrap();
        let (bos, eos) = tiny_special_ids();
        assert_eq!(ids[0], bos);
        // "the" at the start has no space: t(116) + he(257); " the" is one token (258).
        assert_eq!(&ids[1..3], &[116, 257]);
        assert!(ids.contains(&258));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.token_id(TINY_EOS), Some(eos));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
