//! The imported settings put into a [`Config`] (refusing a fenceline TOML
//! that sets them too), printed as fenceline TOML, and the daemon's config
//! with `--fence-virt-conf`.

use std::path::Path;

use serde::Serialize;

use crate::{Config, ConfigError, FenceBackend, ListenersSection, NameMode, PermissionGroup};

use super::import::{Imported, load};

/// The settings fence_virt.conf owns, as `[section] key` names: the
/// fenceline TOML must not set them as well.
const OWNED: &[(&str, Option<&str>)] = &[
    ("fencing", Some("backend")),
    ("libvirt", Some("uris")),
    ("libvirt", Some("name_mode")),
    ("listeners", None),
    ("groups", None),
];

impl Imported {
    /// Puts the imported settings into `base`. `base_toml` is the fenceline
    /// TOML `base` came from (if any): setting one of fence_virt.conf's keys
    /// there too is an error naming both files, so nothing is overridden
    /// silently.
    pub fn apply(
        &self,
        mut base: Config,
        base_toml: Option<(&str, &Path)>,
        fvc_path: &Path,
    ) -> Result<Config, ConfigError> {
        if let Some((text, path)) = base_toml {
            let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                line: 0,
                column: 0,
                key: None,
                message: e.message().to_string(),
            })?;
            for (section, key) in OWNED {
                let present = match (table.get(*section), key) {
                    (Some(_), None) => true,
                    (Some(toml::Value::Table(t)), Some(k)) => t.contains_key(*k),
                    _ => false,
                };
                if present {
                    let name = match key {
                        Some(k) => format!("{section}.{k}"),
                        None => section.to_string(),
                    };
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        line: None,
                        key: name,
                        message: format!(
                            "also set by --fence-virt-conf {}; with --fence-virt-conf, fencing.backend, libvirt.uris, libvirt.name_mode, [listeners.*] and [[groups]] come from fence_virt.conf only",
                            fvc_path.display()
                        ),
                    });
                }
            }
        }
        base.fencing.backend = self.backend;
        base.libvirt.uris = self.uris.clone();
        base.libvirt.name_mode = self.name_mode;
        base.listeners = self.listeners.clone();
        base.groups = self.groups.clone();
        // The same checks a TOML file gets.
        base.check(fvc_path)?;
        Ok(base)
    }

    /// The equivalent fenceline TOML (only the settings fence_virt.conf
    /// has), with the notes as comments on top.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Fencing {
            backend: FenceBackend,
        }
        #[derive(Serialize)]
        struct Libvirt<'a> {
            uris: &'a [String],
            name_mode: NameMode,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            fencing: Fencing,
            libvirt: Libvirt<'a>,
            listeners: &'a ListenersSection,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            groups: &'a [PermissionGroup],
        }
        let out = Out {
            fencing: Fencing {
                backend: self.backend,
            },
            libvirt: Libvirt {
                uris: &self.uris,
                name_mode: self.name_mode,
            },
            listeners: &self.listeners,
            groups: &self.groups,
        };
        let mut s = String::new();
        for n in &self.notes {
            // Values may span lines and hold control characters; every line
            // of a note stays a valid TOML comment.
            s.push_str("# note: ");
            for c in n.chars() {
                match c {
                    '\n' => s.push_str("\n#   "),
                    c if c.is_control() => s.extend(c.escape_default()),
                    c => s.push(c),
                }
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&toml::to_string(&out).unwrap_or_else(|e| format!("# cannot render: {e}\n")));
        s
    }
}

/// The daemon's config with `--fence-virt-conf`: the fenceline TOML
/// (`--config`, or the default path if it exists) for fenceline's own
/// settings, fence_virt.conf for the rest. Also returns the import's notes
/// (ignored keys and the like) for the caller to show: logging is not set up
/// yet when the config is read.
pub fn daemon_config(
    toml_path: Option<&Path>,
    fvc_path: &Path,
) -> Result<(Config, Vec<String>), ConfigError> {
    let (base, used) = Config::load(toml_path)?;
    let imported = load(fvc_path)?;
    let text = match &used {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                path: p.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let cfg = imported.apply(base, text.as_deref().zip(used.as_deref()), fvc_path)?;
    Ok((cfg, imported.notes))
}
