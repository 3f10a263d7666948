//! SIGHUP (`systemctl reload fenceline`): re-read the config and apply what
//! can change without leaving the CPG groups — the permission groups, the
//! listeners (only those whose settings or key changed are rebound), the
//! log level and the key files. A config that does not load is refused
//! with an error line and the old one stays in force. Settings that need a
//! restart are named. Every reload is an event (`config reloaded: ...`).

use std::path::{Path, PathBuf};

use crate::engine::fence::listeners::{ListenerSet, ListenerSettings};
use crate::engine::model::Input;
use crate::engine::{EngineHandle, InputTx};
use crate::logging::LogLevel;
use fenceline_config::Config;
use fenceline_proto::api::now_millis;

/// What a reload needs: where the config comes from, what is in force, and
/// the parts it changes.
pub struct Reloader {
    pub config_path: Option<PathBuf>,
    pub fence_virt_conf: Option<PathBuf>,
    pub current: Config,
    pub listeners: ListenerSet<EngineHandle>,
    pub log: LogLevel,
    pub inputs: InputTx,
}

impl Reloader {
    /// One reload; the outcome is logged and sent as an event.
    pub async fn reload(&mut self) {
        let detail = match self.apply().await {
            Ok(detail) => {
                tracing::info!("SIGHUP: config reloaded: {detail}");
                detail
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: the new config is refused, the old one stays in force: {e:#}"
                );
                format!("refused, the old config stays in force: {e:#}")
            }
        };
        self.inputs
            .send(Input::Reloaded {
                at: now_millis(),
                detail,
            })
            .await;
    }

    fn load(&self) -> anyhow::Result<Config> {
        let path = self.config_path.as_deref();
        if let Some(p) = path {
            crate::engine::fence::key::check_private(p, crate::engine::fence::key::Private::Config)
                .map_err(|e| anyhow::anyhow!("the config file {}: {e}", p.display()))?;
        }
        Ok(match &self.fence_virt_conf {
            Some(fvc) => fenceline_config::fence_virt_conf::daemon_config(path, fvc)?.0,
            None => Config::load(path)?.0,
        })
    }

    async fn apply(&mut self) -> anyhow::Result<String> {
        let new = self.load()?;
        // Everything that can fail first: a refused level changes nothing.
        if new.log.level != self.current.log.level && !self.log.from_env {
            tracing_subscriber::EnvFilter::try_new(&new.log.level)
                .map_err(|e| anyhow::anyhow!("log.level {:?}: {e}", new.log.level))?;
        }
        let mut changed = self.listeners.reload(&ListenerSettings::from(&new)).await?;
        if new.log.level != self.current.log.level {
            if self.log.from_env {
                changed.push("log.level (ignored: FENCELINE_LOG is set)".into());
            } else if let Err(e) = self.log.set(&new.log.level) {
                changed.push(format!("log.level not changed: {e}"));
            } else {
                changed.push(format!(
                    "log.level {:?} -> {:?}",
                    self.current.log.level, new.log.level
                ));
            }
        }
        let restart = needs_restart(&self.current, &new);
        let mut detail = if changed.is_empty() {
            "nothing changed that a reload applies".to_string()
        } else {
            changed.join("; ")
        };
        if !restart.is_empty() {
            detail.push_str(&format!(
                "; needs restart (not applied): {}",
                restart.join(", ")
            ));
            tracing::warn!(
                "SIGHUP: changed settings that need a restart (systemctl restart fenceline): {}",
                restart.join(", ")
            );
        }
        // The rest stays as started, so a later reload reports it again.
        self.current = Config {
            listeners: new.listeners,
            groups: new.groups,
            log: fenceline_config::LogSection {
                level: new.log.level,
                ..self.current.log.clone()
            },
            ..self.current.clone()
        };
        Ok(detail)
    }
}

/// The sections a reload does not apply, by name, when they changed.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            v.push(name);
        }
    };
    check("[libvirt]", old.libvirt != new.libvirt);
    check("[corosync]", old.corosync != new.corosync);
    check("[control]", old.control != new.control);
    check("[hooks]", old.hooks != new.hooks);
    check("[events]", old.events != new.events);
    check("[fencing]", old.fencing != new.fencing);
    check("log.file", old.log.file != new.log.file);
    v
}

/// The config's path for messages.
pub fn describe(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built-in defaults)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_sections_are_named() {
        let old = Config::default();
        let mut new = old.clone();
        new.groups.push(Default::default());
        new.log.level = "debug".into();
        assert!(needs_restart(&old, &new).is_empty());
        new.corosync.own_group = "other".into();
        new.libvirt.uris = vec!["test:///default".into()];
        assert_eq!(needs_restart(&old, &new), vec!["[libvirt]", "[corosync]"]);
    }
}
