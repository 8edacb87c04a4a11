//! The server's configuration file (YAML): where it listens, where its database, payloads and
//! trusted keys live, the URL machines download from, and the operators' API token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `server.yaml`. Relative paths are relative to the file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on, e.g. `0.0.0.0:8000`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with these PEM files instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// The SQLite database file (created with its schema on first start).
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// A PostgreSQL connection string (`host=/run/postgresql dbname=keel user=keel`) used
    /// instead of `database`, for several replicas sharing one store.
    #[serde(default)]
    pub postgres: Option<String>,
    /// Where published payloads are kept, one file per payload named by its SHA-256.
    pub payloads: PathBuf,
    /// Directory of trusted Ed25519 public keys (`*.pem`): `publish` refuses anything else.
    pub trusted_keys: PathBuf,
    /// The base URL machines reach this server at (payload URLs are built from it), e.g.
    /// `https://updates.example.com:8443`. Default: `http://` + `listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Bearer token of the JSON API (`Authorization: Bearer TOKEN`). Without one the API is off.
    #[serde(default)]
    pub api_token: Option<String>,
    /// `PollInterval` sent to clients, seconds (none: the client's own schedule).
    #[serde(default)]
    pub poll_interval: Option<u32>,
    /// Forget events, activity and instances older than this many days (none: keep all).
    /// Checked at start and every hour.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Parse { path: PathBuf, error: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut config: Config = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.payloads, &mut config.trusted_keys]
            .into_iter()
            .chain(config.database.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if config.database.is_some() == config.postgres.is_some() {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                error:
                    "give exactly one of database (SQLite file) and postgres (connection string)"
                        .into(),
            });
        }
        if let Some(tls) = &mut config.tls {
            for p in [&mut tls.cert, &mut tls.key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// The base URL payload URLs start with, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.listen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.yaml");
        std::fs::write(
            &file,
            "listen: 127.0.0.1:9000\ndatabase: db.sqlite\npayloads: /srv/p\ntrusted_keys: keys\n",
        )
        .unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.database, Some(dir.path().join("db.sqlite")));
        assert_eq!(c.payloads, PathBuf::from("/srv/p"));
        assert_eq!(c.public_url(), "http://127.0.0.1:9000");
        std::fs::write(
            &file,
            "database: d\npayloads: p\ntrusted_keys: k\nlisten_on: x\n",
        )
        .unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.contains("listen_on"), "{e}");
        std::fs::write(
            &file,
            "database: d\npostgres: host=x\npayloads: p\ntrusted_keys: k\n",
        )
        .unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(e.contains("exactly one"), "{e}");
    }
}
