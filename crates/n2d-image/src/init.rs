//! The guest's PID 1 (n2d-init) as the builder takes it: bytes plus where they came from, checked
//! to be a static x86-64 ELF before any work. A dynamically linked init (e.g. a plain
//! `cargo build` of n2d-init for the host's glibc) panics the guest kernel with "No working init
//! found", so it is refused here, naming the fix.

use object::elf::{FileHeader64, EM_X86_64, PT_INTERP};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// How to get a good init, for error messages.
pub const INIT_FIX: &str = "unset N2D_INIT and drop --init to use the init built into n2d, or build one with `cargo build --release -p n2d-init --target x86_64-unknown-linux-musl`";

#[derive(Clone)]
pub struct GuestInit {
    pub bytes: Vec<u8>,
    /// Where the bytes came from ("built into n2d", or a path), for messages.
    pub source: String,
}

impl std::fmt::Debug for GuestInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestInit({}, {} bytes)", self.source, self.bytes.len())
    }
}

/// Why an init cannot be PID 1 of n2d's guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitProblem {
    #[error("it is not an ELF executable")]
    NotElf,
    #[error("it is not a 64-bit x86-64 ELF")]
    WrongArchitecture,
    #[error("it is dynamically linked (it asks for the program interpreter {interpreter}), and the guest has no C library for it")]
    DynamicallyLinked { interpreter: String },
}

/// Accepts a static (or static-pie) little-endian x86-64 ELF executable: no `PT_INTERP`.
pub fn check_static_x86_64(bytes: &[u8]) -> Result<(), InitProblem> {
    let header = FileHeader64::<Endianness>::parse(bytes).map_err(|_| InitProblem::NotElf)?;
    let endian = header.endian().map_err(|_| InitProblem::NotElf)?;
    if endian != Endianness::Little || header.e_machine(endian) != EM_X86_64 {
        return Err(InitProblem::WrongArchitecture);
    }
    let segments = header.program_headers(endian, bytes).map_err(|_| InitProblem::NotElf)?;
    for segment in segments {
        if segment.p_type(endian) == PT_INTERP {
            let interpreter = segment
                .data(endian, bytes)
                .ok()
                .map(|d| String::from_utf8_lossy(d).trim_end_matches('\0').to_string())
                .unwrap_or_else(|| "?".into());
            return Err(InitProblem::DynamicallyLinked { interpreter });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A static x86-64 ELF header, as other modules' tests need one.
    pub(crate) fn minimal_static_elf() -> Vec<u8> {
        elf(62, None)
    }

    /// A minimal ELF64 header + program headers, as the linker would write them.
    fn elf(machine: u16, interp: Option<&str>) -> Vec<u8> {
        let phnum: u16 = if interp.is_some() { 2 } else { 1 };
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little endian
        b[6] = 1; // version
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&phnum.to_le_bytes());
        let data_off = 64 + 56 * phnum as u64;
        let mut phdr = |p_type: u32, off: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&p_type.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            b.extend(p);
        };
        phdr(1, 0, 64); // PT_LOAD
        if let Some(i) = interp {
            phdr(3 /* PT_INTERP */, data_off, i.len() as u64 + 1);
            b.extend(i.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn accepts_a_static_x86_64_elf() {
        assert_eq!(check_static_x86_64(&elf(62 /* x86-64 */, None)), Ok(()));
    }

    #[test]
    fn refuses_a_glibc_linked_init_naming_its_interpreter() {
        let err =
            check_static_x86_64(&elf(62 /* x86-64 */, Some("/lib64/ld-linux-x86-64.so.2"))).unwrap_err();
        assert_eq!(err, InitProblem::DynamicallyLinked { interpreter: "/lib64/ld-linux-x86-64.so.2".into() });
        assert!(err.to_string().contains("dynamically linked"));
    }

    #[test]
    fn refuses_other_architectures_and_non_elf_files() {
        assert_eq!(check_static_x86_64(&elf(183 /* aarch64 */, None)), Err(InitProblem::WrongArchitecture));
        assert_eq!(check_static_x86_64(b"#!/bin/sh\nexec /sbin/init\n"), Err(InitProblem::NotElf));
        assert_eq!(check_static_x86_64(&[]), Err(InitProblem::NotElf));
    }

    #[test]
    fn the_test_binary_itself_is_dynamic_on_glibc_hosts() {
        // This test binary is linked like a plain host build of n2d-init would be.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if cfg!(target_env = "gnu") {
            assert!(matches!(check_static_x86_64(&me), Err(InitProblem::DynamicallyLinked { .. })));
        }
    }
}
