//! A pass over a cluster file's YAML events, before serde sees it: it refuses anchors and
//! aliases (an alias bomb expands a small file into gigabytes) and nesting deeper than the
//! caller's `max_depth`, and stops at the first offence, so neither costs time or memory.
//! Syntax errors are left to serde_yaml_ng, which reports them with more context.
//!
//! It depends on no other module of this crate: the swarm spec calls it and turns a
//! [`ScanError`] into its own error.

use std::mem::MaybeUninit;
use unsafe_libyaml as unsafe_sys;

/// Why [`check`] refused a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// libyaml could not allocate its parser.
    OutOfMemory,
    /// An anchor or alias at `line` (1-based).
    Alias { line: u64 },
    /// Nesting deeper than `max` at `line` (1-based).
    TooDeep { max: usize, line: u64 },
}

/// Checks `input` (at most the swarm spec's `MAX_CLUSTER_FILE` bytes, the caller's job),
/// refusing nesting deeper than `max_depth`.
pub(crate) fn check(input: &[u8], max_depth: usize) -> Result<(), ScanError> {
    let mut parser = MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit();
    // SAFETY: the parser is initialised before use and deleted exactly once below; `input`
    // outlives it; every event is deleted after it is read, and its union is read only through
    // the member that its type names.
    unsafe {
        let p = parser.as_mut_ptr();
        if unsafe_sys::yaml_parser_initialize(p).fail {
            return Err(ScanError::OutOfMemory);
        }
        unsafe_sys::yaml_parser_set_encoding(p, unsafe_sys::YAML_UTF8_ENCODING);
        unsafe_sys::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
        let result = scan(p, max_depth);
        unsafe_sys::yaml_parser_delete(p);
        result
    }
}

unsafe fn scan(p: *mut unsafe_sys::yaml_parser_t, max_depth: usize) -> Result<(), ScanError> {
    let mut depth = 0usize;
    loop {
        let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
        let e = event.as_mut_ptr();
        // SAFETY: see `check`.
        unsafe {
            if unsafe_sys::yaml_parser_parse(p, e).fail {
                // A syntax error: serde_yaml_ng will report it.
                return Ok(());
            }
            let line = (*e).start_mark.line + 1;
            let (anchor, opens, closes) = match (*e).type_ {
                unsafe_sys::YAML_STREAM_END_EVENT => {
                    unsafe_sys::yaml_event_delete(e);
                    return Ok(());
                }
                unsafe_sys::YAML_ALIAS_EVENT => (true, false, false),
                unsafe_sys::YAML_SCALAR_EVENT => (!(*e).data.scalar.anchor.is_null(), false, false),
                unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                    (!(*e).data.sequence_start.anchor.is_null(), true, false)
                }
                unsafe_sys::YAML_MAPPING_START_EVENT => {
                    (!(*e).data.mapping_start.anchor.is_null(), true, false)
                }
                unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                    (false, false, true)
                }
                _ => (false, false, false),
            };
            unsafe_sys::yaml_event_delete(e);
            if anchor {
                return Err(ScanError::Alias { line });
            }
            if opens {
                depth += 1;
                if depth > max_depth {
                    return Err(ScanError::TooDeep { max: max_depth, line });
                }
            }
            if closes {
                depth = depth.saturating_sub(1);
            }
        }
    }
}
