//! What can make boot fail. Each variant names the step that failed; the cause is its source.

use crate::sys::Exit;
use n2d_proto::ConfigDiskError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mounting {fstype} on {target}")]
    Mount {
        fstype: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the module list {path}")]
    ReadModuleList {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("module {name} is not in {dep_file}")]
    UnknownModule { name: String, dep_file: String },
    #[error("loading module {name}")]
    LoadModule {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("no disk with serial {serial} appeared within {waited_s} s")]
    DiskNotFound { serial: String, waited_s: u64 },
    #[error(
        "no root filesystem within {waited_s} s: no disk with serial n2d-root, no partition named \
         n2d-root, no ISO 9660 filesystem holding n2d/rootfs.erofs"
    )]
    RootNotFound { waited_s: u64 },
    #[error("opening a DHCP socket on {ifname}")]
    DhcpSocket {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("no DHCP lease on {ifname} within {waited_s} s")]
    NoDhcpLease { ifname: String, waited_s: u64 },
    #[error("no Ethernet interface appeared")]
    NoEthernet,
    #[error("mounting the root filesystem ({step})")]
    MountRoot {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("switching to the new root ({step})")]
    SwitchRoot {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the config disk {device}")]
    ReadConfigDisk {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("decoding the config disk {device}")]
    DecodeConfigDisk {
        device: String,
        #[source]
        source: ConfigDiskError,
    },
    #[error("the config disk {device} holds no TLS material (an --insecure-tcp machine)")]
    NoTlsMaterial { device: String },
    #[error("the config disk {device} holds no PEM {what}")]
    BadTlsMaterial { device: String, what: &'static str },
    #[error("the config disk {device} is a template's, not a clone's")]
    TemplateConfig { device: String },
    #[error("the config disk {device} opens no TCP port for Docker")]
    NoTcpPort { device: String },
    #[error("the config disk {device} carries no seed for the kernel's RNG")]
    NoSeed { device: String },
    #[error("the config disk {device} names no MAC for the NIC")]
    NoNicMac { device: String },
    #[error("the config disk {device} names an uplink NIC; the template has none")]
    UnexpectedUplink { device: String },
    #[error("the config disk {device} names no uplink NIC; the template has one")]
    MissingUplink { device: String },
    #[error("mixing the seed into the kernel's RNG")]
    MixEntropy {
        #[source]
        source: io::Error,
    },
    #[error("setting the wall clock to {unix_ms} ms after the epoch")]
    SetWallClock {
        unix_ms: u64,
        #[source]
        source: io::Error,
    },
    #[error("reading random bytes from the kernel")]
    RandomBytes {
        #[source]
        source: io::Error,
    },
    #[error("removing {path}")]
    RemoveFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("setting the hostname to {name:?}")]
    SetHostname {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("creating directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("running {command}")]
    RunCommand {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed with {exit}")]
    CommandFailed { command: String, exit: Exit },
    #[error("no network interface with MAC {mac} appeared")]
    NicNotFound { mac: String },
    #[error("reading the data disk {device}")]
    ReadDataDisk {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("formatting the data disk {device}")]
    FormatDataDisk {
        device: String,
        #[source]
        source: Box<Error>,
    },
    #[error("mounting the data disk {device} on {target}")]
    MountDataDisk {
        device: String,
        target: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Extension to attach a file path to an io error.
pub fn write_err(path: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::WriteFile { path: path.into(), source }
}

pub fn mkdir_err(path: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::CreateDir { path: path.into(), source }
}

/// The error and its causes, one per line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text += &format!("\n  caused by: {e}");
        cause = e.source();
    }
    text
}

/// [`chain`] on one line: the error and its causes joined by `: `.
pub fn one_line(error: &dyn std::error::Error) -> String {
    chain(error).replace("\n  caused by: ", ": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lists_every_cause() {
        let inner = Error::CommandFailed { command: "mkfs.ext4 /dev/vdb".into(), exit: Exit::Code(1) };
        let outer = Error::FormatDataDisk { device: "/dev/vdb".into(), source: Box::new(inner) };
        assert_eq!(
            chain(&outer),
            "formatting the data disk /dev/vdb\n  caused by: `mkfs.ext4 /dev/vdb` failed with exit code 1"
        );
        assert_eq!(
            one_line(&outer),
            "formatting the data disk /dev/vdb: `mkfs.ext4 /dev/vdb` failed with exit code 1"
        );
    }
}
