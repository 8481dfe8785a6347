//! Which QEMU is installed: `qemu-system-x86_64 --version`, parsed. Emulation choices depend on
//! it (see [`crate::argv`]), and `n2d doctor` reports it.

use std::fmt;

/// A QEMU release, e.g. 10.0.2 (from "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl QemuVersion {
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        QemuVersion { major, minor, micro }
    }

    /// Parses the first line of `qemu-system-x86_64 --version`.
    pub fn parse(version_output: &str) -> Option<QemuVersion> {
        let line = version_output.lines().next()?;
        let rest = line.split("version").nth(1)?.trim_start();
        let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let mut parts = number.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let micro = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(QemuVersion { major, minor, micro })
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// The first line of `binary --version` (e.g. `QEMU emulator version 10.0.2 (Debian
/// 1:10.0.2+ds-2+deb13u1~bpo12+1)`): which build, down to the distribution's revision.
pub fn detect_qemu_build(binary: &str) -> Option<String> {
    let out = std::process::Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && QemuVersion::parse(line).is_some()).then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_version_lines() {
        let v10 =
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025\n";
        assert_eq!(QemuVersion::parse(v10), Some(QemuVersion::new(10, 0, 2)));
        let v72 = "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)";
        assert_eq!(QemuVersion::parse(v72), Some(QemuVersion::new(7, 2, 19)));
        assert_eq!(QemuVersion::parse("QEMU emulator version 9.1"), Some(QemuVersion::new(9, 1, 0)));
        assert!(QemuVersion::new(7, 2, 19) < QemuVersion::new(10, 0, 0));
        assert_eq!(QemuVersion::parse("bash: qemu: not found"), None);
        assert_eq!(QemuVersion::parse(""), None);
    }

    #[test]
    fn the_build_is_the_first_version_line_of_a_qemu() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path.display().to_string()
        };
        let qemu =
            fake("qemu", "echo 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)'; echo 'Copyright'");
        assert_eq!(
            detect_qemu_build(&qemu).as_deref(),
            Some("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)")
        );
        assert_eq!(detect_qemu_build(&fake("other", "echo hello")), None);
        assert_eq!(detect_qemu_build(&fake("failing", "echo 'QEMU emulator version 10.0.2'; exit 1")), None);
        assert_eq!(detect_qemu_build("/nonexistent/qemu"), None);
    }
}
