//! One module per target; each has `pub fn run(data: &[u8])`.

pub mod cloudconfig;
pub mod coordination_json;
pub mod definition_yaml;
pub mod gpt;
pub mod init_config;
pub mod metadata;
pub mod omaha;
pub mod update_conf;
pub mod verity_geometry;
