//! The boot side of cloud-config: find the user-data (six sources, first found wins), apply
//! it with [`crate::apply`], tell systemd. `keel-cloudinit` (the binary every image ships) is
//! a thin edge over this.
//!
//! | module | job |
//! |---|---|
//! | [`kargs`] | `keel.config.url=`, `keel.config.imds=`, `keel.config.strict=` |
//! | [`source`] | the sources, their order, reading each |
//! | [`media`] | filesystems by label (config-2, cidata): blkid, mount read-only, umount |
//! | [`http`] | GET/PUT with errors naming method, URL, status and bytes |
//! | [`etcd_member`] | what etcd-member.service runs: etcd with placeholders filled in, or the gateway |
//! | [`apply`] | one user-data: validate, print, apply (or halt when strict), hand systemd the rest |
//! | [`host`] | systemctl, systemd-run, the live hostname (a trait) |
//! | [`stage`] | the local and network stages |

pub mod apply;
pub mod dns;
pub mod etcd_member;
pub mod etcd_srv;
pub mod host;
pub mod http;
pub mod kargs;
pub mod media;
pub mod source;
pub mod stage;
pub mod storage;

#[cfg(test)]
mod tests;
