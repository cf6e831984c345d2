//! Safetensors files in the Hugging Face layout: one `model.safetensors`, or shards
//! `model-0000N-of-0000M.safetensors` listed by `model.safetensors.index.json`.
//!
//! Second step of loading, after [`crate::config`]: a [`TensorStore`] maps every tensor name to
//! its bytes, dtype and shape, and converts on demand (f16, bf16, f32, f64 to f64; `uint8` as
//! raw bytes for packed ternary weights). [`crate::weights`] then asks it for exactly the
//! tensors the configuration implies. Writing (for the built-in tiny checkpoint) lives here too,
//! so that reader and writer agree on the layout.

use crate::error::{ModelError, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives.
#[derive(Clone, Debug)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// All tensors of a checkpoint, read into memory, addressed by name.
pub struct TensorStore {
    files: Vec<(String, Vec<u8>)>,
    entries: HashMap<String, Entry>,
}

impl TensorStore {
    /// Opens the weights of a model directory: `model.safetensors` if present, otherwise the
    /// shards named by `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            let mut store = TensorStore {
                files: Vec::new(),
                entries: HashMap::new(),
            };
            store.add_file(&single, SINGLE_FILE)?;
            Ok(store)
        } else if index.is_file() {
            Self::open_sharded(dir, &index)
        } else {
            Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            })
        }
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index.to_path_buf(),
            source,
        })?;
        let mut shards: Vec<&String> = parsed.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut store = TensorStore {
            files: Vec::new(),
            entries: HashMap::new(),
        };
        for shard in shards {
            // The index is untrusted: a shard name must be a plain file name in this directory.
            if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                return Err(ModelError::SafeTensors {
                    path: index.to_path_buf(),
                    reason: format!("shard name `{shard}` is not a plain file name"),
                });
            }
            store.add_file(&dir.join(shard), shard)?;
        }
        for (name, shard) in &parsed.weight_map {
            let found = store.entries.get(name).map(|e| &store.files[e.file].0);
            if found != Some(shard) {
                return Err(ModelError::TensorNotInShard {
                    name: name.clone(),
                    shard: shard.clone(),
                });
            }
        }
        Ok(store)
    }

    fn add_file(&mut self, path: &Path, label: &str) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |reason: String| ModelError::SafeTensors {
            path: path.to_path_buf(),
            reason,
        };
        let (header, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let base = 8 + header;
        let file = self.files.len();
        for (name, info) in meta.tensors() {
            let (s, e) = info.data_offsets;
            let entry = Entry {
                file,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: base + s,
                end: base + e,
            };
            if let Some(prev) = self.entries.get(&name) {
                return Err(ModelError::DuplicateTensor {
                    name,
                    first: self.files[prev.file].0.clone(),
                    second: label.to_string(),
                });
            }
            self.entries.insert(name, entry);
        }
        self.files.push((label.to_string(), bytes));
        Ok(())
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// The shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    /// The dtype of a tensor, as safetensors spells it (`F16`, `BF16`, `U8`, ...).
    pub fn dtype_name(&self, name: &str) -> Result<String> {
        Ok(format!("{:?}", self.entry(name)?.dtype))
    }

    /// Whether a tensor is stored as `uint8` (packed ternary weights).
    pub fn is_u8(&self, name: &str) -> Result<bool> {
        Ok(self.entry(name)?.dtype == Dtype::U8)
    }

    fn check_shape(name: &str, entry: &Entry, expected: &[usize]) -> Result<()> {
        if entry.shape != expected {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        Ok(())
    }

    /// A floating-point tensor of the given shape, converted to f64; rejects NaN and infinity.
    pub fn f64_tensor(&self, name: &str, expected: &[usize]) -> Result<Vec<f64>> {
        let entry = self.entry(name)?;
        Self::check_shape(name, entry, expected)?;
        let bytes = &self.files[entry.file].1[entry.start..entry.end];
        let out: Vec<f64> = match entry.dtype {
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect(),
            other => {
                return Err(ModelError::TensorDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                    expected: "F16, BF16, F32 or F64",
                })
            }
        };
        if out.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                name: name.to_string(),
            });
        }
        Ok(out)
    }

    /// A `uint8` tensor of the given shape, as raw bytes.
    pub fn u8_tensor(&self, name: &str, expected: &[usize]) -> Result<&[u8]> {
        let entry = self.entry(name)?;
        if entry.dtype != Dtype::U8 {
            return Err(ModelError::TensorDtype {
                name: name.to_string(),
                dtype: format!("{:?}", entry.dtype),
                expected: "U8 (packed ternary)",
            });
        }
        Self::check_shape(name, entry, expected)?;
        Ok(&self.files[entry.file].1[entry.start..entry.end])
    }

    /// A scalar stored as a one-element tensor of shape `[1]` or `[]` (a `weight_scale`).
    pub fn scalar(&self, name: &str) -> Result<f64> {
        let entry = self.entry(name)?;
        let shape = entry.shape.clone();
        if !(shape.is_empty() || shape == [1]) {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: vec![1],
                found: shape,
            });
        }
        Ok(self.f64_tensor(name, &shape)?[0])
    }
}

/// The storage type of a tensor written by [`write_checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    /// IEEE half precision (1bitLLM's fp16 latent weights).
    F16,
    /// bfloat16 (Microsoft's checkpoints).
    BF16,
    /// IEEE single precision.
    F32,
    /// Raw bytes (packed ternary weights).
    U8,
}

/// One tensor to write: its name, dtype, shape and little-endian bytes.
pub struct OwnedTensor {
    /// Tensor name in the Hugging Face layout.
    pub name: String,
    /// Storage type.
    pub dtype: StoreDtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    /// Rounds f64 values into the given floating-point storage type.
    pub fn from_f64(name: &str, dtype: StoreDtype, shape: Vec<usize>, values: &[f64]) -> Self {
        let bytes = match dtype {
            StoreDtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f64(*v).to_le_bytes())
                .collect(),
            StoreDtype::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f64(*v).to_le_bytes())
                .collect(),
            StoreDtype::F32 => values
                .iter()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect(),
            StoreDtype::U8 => values.iter().map(|v| *v as u8).collect(),
        };
        OwnedTensor {
            name: name.to_string(),
            dtype,
            shape,
            bytes,
        }
    }
}

/// Reads every tensor of one safetensors file as it is stored (for rewriting checkpoints, e.g.
/// in tests or converters). Tensors of other dtypes than [`StoreDtype`] are refused.
pub fn read_tensors(path: &Path) -> Result<Vec<OwnedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::SafeTensors {
        path: path.to_path_buf(),
        reason: format!("{e:?}"),
    })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F16 => StoreDtype::F16,
            Dtype::BF16 => StoreDtype::BF16,
            Dtype::F32 => StoreDtype::F32,
            Dtype::U8 => StoreDtype::U8,
            other => {
                return Err(ModelError::TensorDtype {
                    name,
                    dtype: format!("{other:?}"),
                    expected: "F16, BF16, F32 or U8",
                })
            }
        };
        out.push(OwnedTensor {
            name,
            dtype,
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        });
    }
    Ok(out)
}

fn st_dtype(d: StoreDtype) -> Dtype {
    match d {
        StoreDtype::F16 => Dtype::F16,
        StoreDtype::BF16 => Dtype::BF16,
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::U8 => Dtype::U8,
    }
}

/// Writes tensors as `model.safetensors` (`shards == 1`) or as `shards` files
/// `model-0000N-of-0000M.safetensors` plus `model.safetensors.index.json`, exactly as
/// `transformers`' `save_pretrained` lays them out. Returns the files written.
pub fn write_checkpoint(
    dir: &Path,
    tensors: &[OwnedTensor],
    shards: usize,
) -> Result<Vec<PathBuf>> {
    let shards = shards.clamp(1, tensors.len().max(1));
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let metadata = Some(metadata);
    let mut written = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0usize;
    for i in 0..shards {
        // Even split, so that every one of the `shards` files named in the index exists.
        let chunk = &tensors[i * tensors.len() / shards..(i + 1) * tensors.len() / shards];
        let file = if shards == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
        };
        let mut views = Vec::with_capacity(chunk.len());
        for t in chunk {
            let view =
                TensorView::new(st_dtype(t.dtype), t.shape.clone(), &t.bytes).map_err(|e| {
                    ModelError::Serialize {
                        name: t.name.clone(),
                        reason: format!("{e:?}"),
                    }
                })?;
            views.push((t.name.clone(), view));
            weight_map.insert(t.name.clone(), serde_json::Value::from(file.clone()));
            total_size += t.bytes.len();
        }
        let path = dir.join(&file);
        safetensors::tensor::serialize_to_file(views, &metadata, &path).map_err(|e| {
            ModelError::SafeTensors {
                path: path.clone(),
                reason: format!("{e:?}"),
            }
        })?;
        written.push(path);
    }
    if shards > 1 {
        let index = serde_json::json!({
            "metadata": { "total_size": total_size },
            "weight_map": weight_map,
        });
        let path = dir.join(INDEX_FILE);
        let text = serde_json::to_string_pretty(&index).expect("JSON values always serialize");
        std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
