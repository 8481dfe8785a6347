//! The Hyper-V helper (`export --format vhdx --hyperv`): a PowerShell script written beside the
//! VHDX that creates a Generation 2 VM from it, as the 2017 tool's `New-Nano2Docker` did
//! (processors, dynamic memory, the first external switch else "Default Switch"), turns Secure
//! Boot off (the UKI is unsigned), connects COM1 to a named pipe, starts the VM and prints its
//! address and the `n2d adopt` command. Parameters with their defaults come first, so a user
//! can override them (`.\n2d-….ps1 -Cpus 4 -SwitchName LAN`).
//!
//! It cannot be run here (no Windows): its text is unit-tested.

use std::net::Ipv4Addr;

/// The VM the script creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperV {
    pub cpus: u32,
    pub memory_startup_mib: u64,
    pub memory_min_mib: u64,
    pub memory_max_mib: u64,
    /// The address the guest configures itself (`--ip`), when known in advance.
    pub static_ip: Option<Ipv4Addr>,
    pub docker_port: u16,
}

impl Default for HyperV {
    fn default() -> Self {
        HyperV {
            cpus: 2,
            memory_startup_mib: 2048,
            memory_min_mib: 512,
            memory_max_mib: 4096,
            static_ip: None,
            docker_port: 2376,
        }
    }
}

/// A PowerShell single-quoted string literal: nothing inside is expanded; a quote (ASCII or
/// one of the typographic ones PowerShell also takes for a quote) is doubled.
pub fn ps_quote(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The script for the VHDX named `vhdx_file` (beside the script), made for `machine` if any.
pub fn script(hv: &HyperV, vhdx_file: &str, machine: Option<&str>) -> String {
    let vm_name = machine.map_or_else(|| vhdx_file.trim_end_matches(".vhdx").to_string(), str::to_string);
    let static_ip = hv.static_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let adopt = match machine {
        Some(name) => format!(
            r#"
if ($ip) {{
    $hostName = $(if ($StaticIp) {{ $ip }} else {{ "{name}.mshome.net" }})
    Write-Host "Record it in n2d (on the n2d host): n2d adopt {name} --host tcp://$($hostName):{port}"
    if (-not $StaticIp) {{
        Write-Host "(Its certificate names {name}.internal, {name}.local and {name}.mshome.net, not a leased address: on Hyper-V's Default Switch {name}.mshome.net resolves; elsewhere map one of these names to $ip, e.g. in the hosts file)"
    }}
}}
"#,
            port = hv.docker_port
        ),
        None => "\nWrite-Host \"This disk was exported without --for NAME: Docker serves its local console only. Export with --for NAME for a TLS endpoint.\"\n".to_string(),
    };
    format!(
        r#"# Made by `n2d image export --hyperv`: creates a Generation 2 Hyper-V VM from {vhdx_q},
# starts it and prints its address. Run it from an elevated PowerShell (a Hyper-V
# administrator), in the directory holding the VHDX:
#   .\{script_name}  [-VMName NAME] [-Cpus N] [-MemoryStartupBytes 2GB] [-SwitchName NAME]
# The VM uses the VHDX in place; copy it first to keep a pristine export.
[CmdletBinding()]
param(
    [string]$VMName = {vm_q},
    [string]$VhdPath = (Join-Path $PSScriptRoot {vhdx_q}),
    [int]$Cpus = {cpus},
    [Int64]$MemoryStartupBytes = {startup}MB,
    [Int64]$MemoryMinimumBytes = {min}MB,
    [Int64]$MemoryMaximumBytes = {max}MB,
    # Empty: the first external switch, else Hyper-V's "Default Switch" (NAT, DHCP, DNS as NAME.mshome.net).
    [string]$SwitchName = '',
    # The address the guest sets itself (export --ip), empty for DHCP.
    [string]$StaticIp = {static_q},
    [int]$TimeoutSeconds = 600
)
$ErrorActionPreference = 'Stop'

if (-not $SwitchName) {{
    $external = Get-VMSwitch -SwitchType External -ErrorAction SilentlyContinue | Select-Object -First 1
    $SwitchName = $(if ($external) {{ $external.Name }} else {{ 'Default Switch' }})
}}
Write-Host "Creating VM $VMName (Generation 2, $Cpus CPUs) on switch '$SwitchName' from $VhdPath"
New-VM -Name $VMName -Generation 2 -VHDPath $VhdPath -SwitchName $SwitchName -MemoryStartupBytes $MemoryStartupBytes | Out-Null
Set-VMProcessor -VMName $VMName -Count $Cpus
Set-VMMemory -VMName $VMName -DynamicMemoryEnabled $true -MinimumBytes $MemoryMinimumBytes -StartupBytes $MemoryStartupBytes -MaximumBytes $MemoryMaximumBytes
# Secure Boot off: the unified kernel image on the disk is not signed, so neither the
# MicrosoftWindows nor the MicrosoftUEFICertificateAuthority template would let it boot.
Set-VMFirmware -VMName $VMName -EnableSecureBoot Off
# The serial console (kernel and n2d-init messages, a leased address) on a named pipe, e.g. for
# PuTTY's serial line \\.\pipe\<VMName>-com1.
Set-VMComPort -VMName $VMName -Number 1 -Path "\\.\pipe\$VMName-com1"
Start-VM -Name $VMName

Write-Host "Waiting for $VMName's IPv4 address (console: \\.\pipe\$VMName-com1)..."
$ip = $null
$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
while (-not $ip -and (Get-Date) -lt $deadline) {{
    Start-Sleep -Seconds 3
    if ($StaticIp) {{ $ip = $StaticIp; break }}
    $adapter = Get-VMNetworkAdapter -VMName $VMName | Select-Object -First 1
    # Reported by the guest's Hyper-V integration services, when it runs them.
    $ip = $adapter.IPAddresses | Where-Object {{ $_ -match '^\d+\.\d+\.\d+\.\d+$' }} | Select-Object -First 1
    if (-not $ip -and $adapter.MacAddress -match '^[0-9A-Fa-f]{{12}}$') {{
        # Otherwise the host's neighbour table, by the VM's MAC address.
        $mac = ($adapter.MacAddress -split '(..)' -ne '') -join '-'
        $ip = Get-NetNeighbor -AddressFamily IPv4 -LinkLayerAddress $mac -ErrorAction SilentlyContinue |
            Select-Object -ExpandProperty IPAddress -First 1
    }}
}}
if ($ip) {{
    Write-Host "$VMName is up at $ip"
}} else {{
    Write-Warning "No address seen for $VMName within $TimeoutSeconds s: read its console (\\.\pipe\$VMName-com1)."
}}
{adopt}"#,
        vhdx_q = ps_quote(vhdx_file),
        vm_q = ps_quote(&vm_name),
        static_q = ps_quote(&static_ip),
        script_name = vhdx_file.trim_end_matches(".vhdx").to_string() + ".ps1",
        cpus = hv.cpus,
        startup = hv.memory_startup_mib,
        min = hv.memory_min_mib,
        max = hv.memory_max_mib,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_nothing_expands() {
        assert_eq!(ps_quote("a b"), "'a b'");
        assert_eq!(ps_quote("it's $x"), "'it''s $x'");
        assert_eq!(ps_quote("\u{2019}"), "'\u{2019}\u{2019}'");
    }

    #[test]
    fn the_script_creates_a_generation_2_vm_and_prints_its_address() {
        let hv = HyperV { cpus: 4, static_ip: Some(Ipv4Addr::new(192, 168, 1, 50)), ..HyperV::default() };
        let text = script(&hv, "n2d-0123456789ab-web1.vhdx", Some("web1"));
        for needed in [
            "[string]$VMName = 'web1',",
            "[string]$VhdPath = (Join-Path $PSScriptRoot 'n2d-0123456789ab-web1.vhdx'),",
            "[int]$Cpus = 4,",
            "[Int64]$MemoryStartupBytes = 2048MB,",
            "[Int64]$MemoryMinimumBytes = 512MB,",
            "[Int64]$MemoryMaximumBytes = 4096MB,",
            "[string]$StaticIp = '192.168.1.50',",
            "New-VM -Name $VMName -Generation 2 -VHDPath $VhdPath -SwitchName $SwitchName",
            "Set-VMProcessor -VMName $VMName -Count $Cpus",
            "Set-VMMemory -VMName $VMName -DynamicMemoryEnabled $true -MinimumBytes $MemoryMinimumBytes -StartupBytes $MemoryStartupBytes -MaximumBytes $MemoryMaximumBytes",
            "Get-VMSwitch -SwitchType External",
            "'Default Switch'",
            "Set-VMFirmware -VMName $VMName -EnableSecureBoot Off",
            "is not signed",
            "Set-VMComPort -VMName $VMName -Number 1 -Path \"\\\\.\\pipe\\$VMName-com1\"",
            "Start-VM -Name $VMName",
            "Get-VMNetworkAdapter -VMName $VMName",
            "Get-NetNeighbor",
            "n2d adopt web1 --host tcp://$($hostName):2376",
        ] {
            assert!(text.contains(needed), "missing {needed:?} in\n{text}");
        }
        // Parameters come first: nothing runs before param().
        let before_param = &text[..text.find("param(").unwrap()];
        assert!(before_param.lines().all(|l| l.starts_with('#') || l.starts_with('[') || l.is_empty()));
    }

    #[test]
    fn without_a_machine_the_vm_is_named_after_the_disk_and_dhcp_is_polled() {
        let text = script(&HyperV::default(), "n2d-0123456789ab.vhdx", None);
        assert!(text.contains("[string]$VMName = 'n2d-0123456789ab',"));
        assert!(text.contains("[string]$StaticIp = '',"));
        assert!(!text.contains("n2d adopt"));
        assert!(text.contains("without --for NAME"));
    }

    #[test]
    fn braces_balance() {
        let text = script(&HyperV::default(), "x.vhdx", Some("m"));
        let open = text.matches('{').count();
        assert_eq!(open, text.matches('}').count(), "{text}");
        assert_eq!(text.matches('(').count(), text.matches(')').count());
    }
}
