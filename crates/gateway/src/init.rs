//! `triage init`: writes a commented starter config, or a demo one that runs against
//! `triage mock-upstream` with no account and no environment variable.

use std::io::Write;
use std::path::{Path, PathBuf};

/// For real providers: every section, commented, keys read from the usual variables.
pub const STARTER: &str = include_str!("init/starter.toml");
/// Two models on `triage mock-upstream`'s default address, `auto` among them.
pub const DEMO: &str = include_str!("init/demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the starter (or demo) config to `path`, refusing to replace a file unless `force`.
pub fn write(path: &Path, demo: bool, force: bool) -> Result<(), InitError> {
    let text = if demo { DEMO } else { STARTER };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Checked by the open itself, so a file appearing meanwhile is not overwritten either.
        options.create_new(true);
    }
    let write_error = |source: std::io::Error| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => InitError::Exists(path.to_path_buf()),
        _ => write_error(e),
    })?;
    file.write_all(text.as_bytes()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use triage_core::catalog::Catalog;
    use triage_core::config::Config;
    use triage_core::policy::Profile;

    /// The catalog a template gives with no environment variable set.
    fn catalog_of(text: &str) -> (Config, Catalog) {
        let file = Path::new("triage.toml");
        let config = Config::parse(text, file).unwrap();
        let catalog = Catalog::build(&config, file, |_| None).unwrap();
        (config, catalog)
    }

    #[test]
    fn demo_routes_auto_among_its_keyless_models() {
        let (config, catalog) = catalog_of(DEMO);
        let unavailable = crate::router::unavailable(&catalog, &config.routing, Profile::Balanced);
        let mut routable: Vec<&str> = catalog
            .models
            .keys()
            .map(String::as_str)
            .filter(|id| !unavailable.contains_key(*id))
            .collect();
        routable.sort_unstable();
        assert_eq!(routable, ["demo/large", "demo/small"]);
        assert!(catalog.missing_key(&catalog.models["demo/small"]).is_none());
    }

    #[test]
    fn starter_is_a_valid_config_on_the_builtin_classifier() {
        let (config, catalog) = catalog_of(STARTER);
        assert_eq!(
            config.classifier.model,
            triage_core::classifier::BUILTIN_MODEL
        );
        // With no key set, nothing is routable: the starter adds no provider of its own.
        let unavailable = crate::router::unavailable(&catalog, &config.routing, Profile::Balanced);
        assert_eq!(unavailable.len(), catalog.models.len());
    }

    #[test]
    fn refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triage.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
        assert!(matches!(
            write(&path, true, false),
            Err(InitError::Exists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "listen = \"127.0.0.1:1\"\n"
        );
        write(&path, true, true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO);
        let fresh = dir.path().join("new.toml");
        write(&fresh, false, false).unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), STARTER);
    }
}
