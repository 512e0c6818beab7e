//! The part of Shmex 0.5.1's C API that NIFs and C nodes share
//! (`include/shmex/lib.h`): creating, mapping, resizing and unlinking the
//! segment a C `Shmex` struct names. `shmex_c_nif` and `shmex_c_cnode` add
//! the functions that deal with terms, and build the archives C code links.
//!
//! C callers hand over raw pointers, so this is where the project's code
//! meets C: every function checks what it can (NULL pointers, names, sizes
//! against the real segment), the header says what is left to the caller,
//! and no panic may unwind into C ([`no_unwind`]). Errors set `errno`, as
//! 0.5.1's did.

#![deny(unsafe_op_in_unsafe_fn)]
// The functions are called from C: their safety contract is the header's.
#![allow(clippy::missing_safety_doc)]

pub mod primary;
pub mod segments;
pub mod strings;
pub mod types;

/// Runs `body`, or answers `fallback()` should it panic: a panic unwinding
/// into C would abort the whole VM. Nothing here is known to panic; this is
/// the net under that claim.
pub fn no_unwind<R>(body: impl FnOnce() -> R, fallback: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| fallback())
}
