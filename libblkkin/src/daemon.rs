//! What the per-node daemons (`blkkin-consumerd`, `blkkin-relayd`) share:
//! their log setup and reading their TOML config files. Only with the
//! `daemon` feature.

use std::path::{Path, PathBuf};

/// How log lines look (`--log-format`, `log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sends `tracing` events to stderr in `format`, filtered by `$BLKKIN_LOG`,
/// else `$RUST_LOG` (e.g. "debug", "blkkin_relayd=trace"), else "info".
pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BLKKIN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Why a config file was not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key (named), or a bad value.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what (toml's message names the key).
        source: toml::de::Error,
    },
}

/// Reads a TOML config file into `T` (a daemon's options, all optional,
/// with unknown keys denied).
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the text of a TOML config file into `T`.
pub fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, toml::de::Error> {
    toml::from_str(text)
}

/// A daemon's options: every one optional, settable on the command line
/// and in a TOML file named by `--config`.
pub trait FileOptions: clap::Parser + serde::de::DeserializeOwned {
    /// The `--config` file given on the command line.
    fn config_file(&self) -> Option<&Path>;
    /// Takes from `file` every option the command line did not give.
    fn or_file(&mut self, file: Self);
}

/// Parses the command line and completes it from its `--config` file (the
/// command line wins).
pub fn parse_with_config<T: FileOptions>() -> Result<T, ConfigFileError> {
    let mut cli = T::parse();
    if let Some(path) = cli.config_file().map(Path::to_path_buf) {
        let file = read_config(&path)?;
        cli.or_file(file);
    }
    Ok(cli)
}

/// Implements [`FileOptions`] for a clap + serde options struct whose
/// `config: Option<PathBuf>` field is the `--config` flag (marked
/// `#[serde(skip)]`) and whose listed fields are all `Option`s.
#[macro_export]
macro_rules! file_options {
    ($ty:ty: $($field:ident),* $(,)?) => {
        impl $crate::daemon::FileOptions for $ty {
            fn config_file(&self) -> Option<&std::path::Path> {
                self.config.as_deref()
            }

            fn or_file(&mut self, file: Self) {
                $( if self.$field.is_none() { self.$field = file.$field; } )*
            }
        }
    };
}
