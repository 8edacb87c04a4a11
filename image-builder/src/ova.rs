//! The OVA: a ustar archive holding the OVF descriptor first (as the OVF specification asks, so
//! importers can read it before the disk), then the streamOptimized VMDK, then the `.mf`
//! manifest with the SHA-256 of both.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::digest;
use crate::error::{io_at, Result};
use crate::vmdk::Written;

/// What the virtual machine in the OVF looks like.
pub struct Machine<'a> {
    /// Name of the virtual system (and the base of the file names).
    pub name: &'a str,
    pub cpus: u32,
    pub memory_mib: u32,
}

pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u32 = 2048;

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The OVF 1.0 envelope: one disk on a SATA (AHCI) controller, EFI firmware.
pub fn descriptor(m: &Machine, vmdk_name: &str, disk: &Written) -> String {
    let name = xml_escape(m.name);
    let vmdk = xml_escape(vmdk_name);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="{vmdk}" ovf:size="{file}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:populatedSize="{populated}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A Keel virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="other5xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Keel (Linux, 64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>disk0</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        file = disk.file_bytes,
        capacity = disk.capacity_bytes,
        populated = disk.populated_bytes,
        cpus = m.cpus,
        mem = m.memory_mib,
    )
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A ustar header for a regular file: root-owned, mode 0644, mtime `mtime`.
fn tar_header(name: &str, size: u64, mtime: u64) -> [u8; 512] {
    assert!(name.len() < 100, "tar member name too long: {name}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn append(
    out: &mut impl Write,
    name: &str,
    src: &mut impl std::io::Read,
    size: u64,
    mtime: u64,
) -> std::io::Result<()> {
    out.write_all(&tar_header(name, size, mtime))?;
    let copied = std::io::copy(src, out)?;
    if copied != size {
        return Err(std::io::Error::other(format!(
            "{name}: {copied} bytes copied, {size} expected"
        )));
    }
    out.write_all(&vec![0u8; ((512 - size % 512) % 512) as usize])
}

/// Write `out` (the .ova) from the VMDK at `vmdk`. Members: `<name>.ovf`, the VMDK (under its
/// own file name), `<name>.mf`.
pub fn write(m: &Machine, vmdk: &Path, disk: &Written, out: &Path, mtime: u64) -> Result<()> {
    let vmdk_name = vmdk
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 VMDK file name");
    let ovf_name = format!("{}.ovf", m.name);
    let ovf = descriptor(m, vmdk_name, disk);
    let vmdk_sha = digest::file_sha256(vmdk, |_| {})?;
    let mf = format!(
        "SHA256({ovf_name})= {}\nSHA256({vmdk_name})= {vmdk_sha}\n",
        digest::sha256_hex(ovf.as_bytes())
    );
    let file = File::create(out).map_err(io_at(out))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut disk_file = File::open(vmdk).map_err(io_at(vmdk))?;
    (|| -> std::io::Result<()> {
        append(
            &mut w,
            &ovf_name,
            &mut ovf.as_bytes(),
            ovf.len() as u64,
            mtime,
        )?;
        append(&mut w, vmdk_name, &mut disk_file, disk.file_bytes, mtime)?;
        append(
            &mut w,
            &format!("{}.mf", m.name),
            &mut mf.as_bytes(),
            mf.len() as u64,
            mtime,
        )?;
        w.write_all(&[0u8; 1024])?;
        w.flush()
    })()
    .map_err(io_at(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU tar lists the members in order with their sizes (the header checksum is right).
    #[test]
    fn gnu_tar_reads_the_archive() {
        let d = tempfile::tempdir().unwrap();
        let vmdk = d.path().join("keel.vmdk");
        std::fs::write(&vmdk, vec![7u8; 1000]).unwrap();
        let w = Written {
            capacity_bytes: 1 << 20,
            populated_bytes: 65536,
            file_bytes: 1000,
        };
        let m = Machine {
            name: "keel",
            cpus: 2,
            memory_mib: 2048,
        };
        let ova = d.path().join("keel.ova");
        write(&m, &vmdk, &w, &ova, 1_700_000_000).unwrap();
        let out = std::process::Command::new("tar")
            .args(["tvf"])
            .arg(&ova)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: Vec<&str> = text
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(names, ["keel.ovf", "keel.vmdk", "keel.mf"], "{text}");
        assert!(text.lines().nth(1).unwrap().contains(" 1000 "), "{text}");
    }
}
