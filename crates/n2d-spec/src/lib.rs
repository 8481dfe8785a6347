//! n2d's data types and their validation. No I/O happens here.

pub mod address;
pub mod copy;
pub mod duration;
pub mod host;
pub mod link;
pub mod machine;
pub mod mount;
pub mod ports;
pub mod scenario;
pub mod shaping;
pub mod swarm;
mod yaml_scan;
