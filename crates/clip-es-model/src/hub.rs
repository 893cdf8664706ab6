//! Resolving a `--model` specification to files on disk: a local path, a Hugging Face hub id
//! (looked up in the Hugging Face cache, downloaded with `hf-hub` when absent), or one of
//! OpenAI's model names (looked up where OpenAI's `clip` package caches them, clip/clip.py's
//! `load` with `download_root` ~/.cache/clip).

use std::path::{Path, PathBuf};

/// The default model of CLIP-ES: OpenAI's ViT-B/16 as published on the Hugging Face hub.
pub const DEFAULT_MODEL: &str = "openai/clip-vit-base-patch16";

/// OpenAI's model names and the file names their `clip` package caches them under.
const OPENAI_MODELS: [(&str, &str); 4] = [
    ("ViT-B/16", "ViT-B-16.pt"),
    ("ViT-B/32", "ViT-B-32.pt"),
    ("ViT-L/14", "ViT-L-14.pt"),
    ("ViT-L/14@336px", "ViT-L-14-336px.pt"),
];

/// Files an HF model directory must hold besides the tokenizer.
const HF_MODEL_FILES: [&str; 2] = ["config.json", "model.safetensors"];
/// Tokenizer files fetched for an HF model (tokenizer.json, or vocab.json + merges.txt).
const HF_TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "vocab.json", "merges.txt"];

/// Where the tokenizer of a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    /// A Hugging Face tokenizer in the model's directory: `tokenizer.json` and/or the pair
    /// `vocab.json` + `merges.txt` (at least one of the two forms is present).
    HuggingFace {
        dir: PathBuf,
        tokenizer_json: Option<PathBuf>,
        vocab_merges: Option<(PathBuf, PathBuf)>,
    },
    /// OpenAI's BPE vocabulary (49,408 tokens) that the tokenizer crate bundles; used for
    /// OpenAI `.pt` files, which carry no tokenizer.
    BundledOpenAi,
}

/// A resolved model: the path for [`crate::weights::ClipWeights::load`] and its tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// A model directory or a weights file.
    pub weights: PathBuf,
    pub tokenizer: TokenizerFiles,
}

/// Why a model specification could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{}: {reason}", .path.display())]
    Local { path: PathBuf, reason: String },
    #[error("model `{spec}` not found: {looked}; pass a local model directory or weights file with --model PATH")]
    NotFound { spec: String, looked: String },
    #[error("model `{spec}`: cannot download {file} into {}: {reason}; pass a local model directory or weights file with --model PATH", .cache.display())]
    Download {
        spec: String,
        file: String,
        cache: PathBuf,
        reason: String,
    },
    #[error("`{0}` is neither an existing path, a Hugging Face model id (owner/name) nor an OpenAI model name (ViT-B/16, ViT-B/32, ViT-L/14)")]
    BadSpec(String),
}

/// Where models are looked for and whether downloading is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// The Hugging Face hub cache (holding `models--owner--name/`).
    pub hf_cache: PathBuf,
    /// OpenAI's `clip` package cache (holding `ViT-B-16.pt`, ...).
    pub clip_cache: PathBuf,
    /// Never download (also set by HF_HUB_OFFLINE=1).
    pub offline: bool,
    /// The hub's address (HF_ENDPOINT), `https://huggingface.co` by default.
    pub endpoint: String,
}

impl Resolver {
    /// Locations from the environment: the HF cache is HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub (XDG_CACHE_HOME replacing ~/.cache when set, as huggingface_hub
    /// does); OpenAI's cache is ~/.cache/clip; HF_HUB_OFFLINE=1 forbids downloads.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var_os(k).map(PathBuf::from))
    }

    /// As [`Resolver::from_env`] with the environment given as a lookup function.
    pub fn from_lookup(env: impl Fn(&str) -> Option<PathBuf>) -> Self {
        let nonempty = |k: &str| env(k).filter(|v| !v.as_os_str().is_empty());
        let home = nonempty("HOME").unwrap_or_else(|| PathBuf::from("."));
        let cache_root = nonempty("XDG_CACHE_HOME").unwrap_or_else(|| home.join(".cache"));
        let hf_cache = nonempty("HF_HUB_CACHE")
            .or_else(|| nonempty("HF_HOME").map(|h| h.join("hub")))
            .unwrap_or_else(|| cache_root.join("huggingface").join("hub"));
        let offline = nonempty("HF_HUB_OFFLINE")
            .map(|v| {
                let v = v.to_string_lossy().to_ascii_lowercase();
                matches!(v.as_str(), "1" | "true" | "yes" | "on")
            })
            .unwrap_or(false);
        let endpoint = nonempty("HF_ENDPOINT")
            .map(|v| v.to_string_lossy().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        Resolver {
            hf_cache,
            clip_cache: home.join(".cache").join("clip"),
            offline,
            endpoint,
        }
    }

    /// Resolves a model specification: an existing path (directory or file), an OpenAI model
    /// name (`ViT-B/16`), or a hub id (`openai/clip-vit-base-patch16`, optionally
    /// `@revision`), looked up in the cache and downloaded when absent and allowed.
    pub fn resolve(&self, spec: &str) -> Result<ModelFiles, HubError> {
        let path = Path::new(spec);
        if path.exists() {
            return local_model(path);
        }
        if let Some((_, file)) = OPENAI_MODELS.iter().find(|(name, _)| *name == spec) {
            let candidate = self.clip_cache.join(file);
            if candidate.is_file() {
                return Ok(ModelFiles {
                    weights: candidate,
                    tokenizer: TokenizerFiles::BundledOpenAi,
                });
            }
            return Err(HubError::NotFound {
                spec: spec.to_string(),
                looked: format!(
                    "no {} (OpenAI's clip package caches it there: python -c \"import clip; clip.load('{spec}')\")",
                    candidate.display()
                ),
            });
        }
        let Some((repo_id, revision)) = parse_hub_id(spec) else {
            return Err(HubError::BadSpec(spec.to_string()));
        };
        if let Some(dir) = self.cached_snapshot(repo_id, revision) {
            return hf_model_dir(&dir);
        }
        let repo_dir = self.hf_cache.join(repo_folder(repo_id));
        if self.offline {
            return Err(HubError::NotFound {
                spec: spec.to_string(),
                looked: format!(
                    "not in the Hugging Face cache ({}) and downloads are off (HF_HUB_OFFLINE)",
                    repo_dir.display()
                ),
            });
        }
        self.download(spec, repo_id, revision)
    }

    /// The snapshot directory of `repo_id` at `revision` in the cache, when it holds the model
    /// files and a tokenizer.
    pub fn cached_snapshot(&self, repo_id: &str, revision: &str) -> Option<PathBuf> {
        let repo_dir = self.hf_cache.join(repo_folder(repo_id));
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
            return None;
        }
        let dir = repo_dir.join("snapshots").join(commit);
        let complete =
            HF_MODEL_FILES.iter().all(|f| dir.join(f).is_file()) && hf_tokenizer(&dir).is_some();
        complete.then_some(dir)
    }

    #[cfg(feature = "download")]
    fn download(&self, spec: &str, repo_id: &str, revision: &str) -> Result<ModelFiles, HubError> {
        use hf_hub::api::sync::ApiBuilder;
        use hf_hub::{Repo, RepoType};
        let fail = |file: &str, reason: String| HubError::Download {
            spec: spec.to_string(),
            file: file.to_string(),
            cache: self.hf_cache.clone(),
            reason,
        };
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let mut builder = ApiBuilder::new()
            .with_cache_dir(self.hf_cache.clone())
            .with_endpoint(self.endpoint.clone())
            .with_progress(true);
        if token.is_some() {
            builder = builder.with_token(token);
        }
        let api = builder
            .build()
            .map_err(|e| fail("(connection)", e.to_string()))?;
        let repo = api.repo(Repo::with_revision(
            repo_id.to_string(),
            RepoType::Model,
            revision.to_string(),
        ));
        let mut dir: Option<PathBuf> = None;
        for file in HF_MODEL_FILES {
            let p = repo.get(file).map_err(|e| fail(file, e.to_string()))?;
            dir.get_or_insert_with(|| p.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        // the tokenizer: whichever of its forms the repository has
        let mut errors = Vec::new();
        for file in HF_TOKENIZER_FILES {
            if let Err(e) = repo.get(file) {
                errors.push(format!("{file}: {e}"));
            }
        }
        let dir = dir.unwrap_or_default();
        if hf_tokenizer(&dir).is_none() {
            return Err(fail("the tokenizer", errors.join("; ")));
        }
        hf_model_dir(&dir)
    }

    #[cfg(not(feature = "download"))]
    fn download(&self, spec: &str, repo_id: &str, _revision: &str) -> Result<ModelFiles, HubError> {
        Err(HubError::NotFound {
            spec: spec.to_string(),
            looked: format!(
                "not in the Hugging Face cache ({}) and this build cannot download (feature `download` off)",
                self.hf_cache.join(repo_folder(repo_id)).display()
            ),
        })
    }
}

/// Resolves `spec` with the locations of the environment ([`Resolver::from_env`]).
pub fn resolve_model(spec: &str) -> Result<ModelFiles, HubError> {
    Resolver::from_env().resolve(spec)
}

/// `owner/name` or `owner/name@revision` -> (repo id, revision, `main` by default).
fn parse_hub_id(spec: &str) -> Option<(&str, &str)> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, rev),
        Some(_) => return None,
        None => (spec, "main"),
    };
    let (owner, name) = id.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (valid(owner) && valid(name)).then_some((id, revision))
}

/// The cache folder of a model repository, as huggingface_hub names it.
fn repo_folder(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// The tokenizer files of an HF model directory, if it has a complete set.
fn hf_tokenizer(dir: &Path) -> Option<TokenizerFiles> {
    let json = dir.join("tokenizer.json");
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let tokenizer_json = json.is_file().then_some(json);
    let vocab_merges = (vocab.is_file() && merges.is_file()).then_some((vocab, merges));
    if tokenizer_json.is_none() && vocab_merges.is_none() {
        return None;
    }
    Some(TokenizerFiles::HuggingFace {
        dir: dir.to_path_buf(),
        tokenizer_json,
        vocab_merges,
    })
}

fn hf_model_dir(dir: &Path) -> Result<ModelFiles, HubError> {
    let tokenizer = hf_tokenizer(dir).ok_or_else(|| HubError::Local {
        path: dir.to_path_buf(),
        reason: "no tokenizer in this model directory (expected tokenizer.json, or vocab.json and merges.txt)"
            .into(),
    })?;
    Ok(ModelFiles {
        weights: dir.to_path_buf(),
        tokenizer,
    })
}

fn local_model(path: &Path) -> Result<ModelFiles, HubError> {
    if path.is_dir() {
        return hf_model_dir(path);
    }
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    // a .safetensors file uses the tokenizer beside it when there is one (an HF layout);
    // OpenAI files (.pt, OpenAI-named safetensors) use OpenAI's vocabulary
    let tokenizer = match path.parent() {
        Some(dir) if is_safetensors => hf_tokenizer(dir).unwrap_or(TokenizerFiles::BundledOpenAi),
        _ => TokenizerFiles::BundledOpenAi,
    };
    Ok(ModelFiles {
        weights: path.to_path_buf(),
        tokenizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert_eq!(
            parse_hub_id("openai/clip-vit-base-patch16"),
            Some(("openai/clip-vit-base-patch16", "main"))
        );
        assert_eq!(parse_hub_id("a/b@v1.0"), Some(("a/b", "v1.0")));
        for bad in ["a", "a/b/c", "/a/b", "./a", "a/", "a/b@", "a b/c", "../x"] {
            assert_eq!(parse_hub_id(bad), None, "{bad}");
        }
        assert_eq!(
            repo_folder("openai/clip-vit-base-patch16"),
            "models--openai--clip-vit-base-patch16"
        );
    }

    #[test]
    fn cache_locations_from_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        let r = Resolver::from_lookup(env(&[("HOME", "/h")]));
        assert_eq!(r.hf_cache, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(r.clip_cache, PathBuf::from("/h/.cache/clip"));
        assert!(!r.offline);
        assert_eq!(r.endpoint, "https://huggingface.co");
        let r = Resolver::from_lookup(env(&[
            ("HOME", "/h"),
            ("HF_HOME", "/hf"),
            ("XDG_CACHE_HOME", "/x"),
        ]));
        assert_eq!(r.hf_cache, PathBuf::from("/hf/hub"));
        let r = Resolver::from_lookup(env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]));
        assert_eq!(r.hf_cache, PathBuf::from("/x/huggingface/hub"));
        let r = Resolver::from_lookup(env(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://mirror/"),
        ]));
        assert_eq!(r.hf_cache, PathBuf::from("/c"));
        assert!(r.offline);
        assert_eq!(r.endpoint, "http://mirror");
    }
}
