//! Failure paths against the fakes.
