//! Well-known paths shared by the daemon, the hook and the config.

/// The hook socket when neither the config nor `FENCELINE_HOOK_SOCKET` says otherwise.
pub const DEFAULT_HOOK_SOCKET: &str = "/run/fenceline/hook.sock";
/// The daemon's config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fenceline/fenceline.toml";
