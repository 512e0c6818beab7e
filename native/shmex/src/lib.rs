//! POSIX shared memory segments for [Shmex](https://hexdocs.pm/shmex), and the
//! Rust side of `%Shmex{}` terms: what the `Shmex.Native` NIF is made of, and
//! what other Rustler NIFs use to work on `%Shmex{}` structs.
//!
//! - [`Handle`]: a `%Shmex{}` NIF argument that carries its guard and claim
//!   and encodes back as the struct, updated.
//! - [`ShmexTerm`]: a `%Shmex{}` term, decoded; [`guarded_struct`] makes one.
//! - [`Shm`]: a decoded struct and the operations of `Shmex.Native`: copies
//!   in and out, and [`Shm::data`] and [`Shm::data_mut`] to work on the data
//!   in place.
//! - [`Guard`]: the NIF resource whose collection unlinks a segment.
//!
//! Everything that deals with the VM needs the `nif` feature, on by default;
//! without it the crate is the segments alone (C nodes use it so).
//!
//! Nothing here can crash the process: a struct's claims are checked against
//! the real segment before its bytes are touched, and a segment shrunk under
//! a copy by another OS process is an error, not SIGBUS.
//!
//! # In a NIF
//!
//! Errors convert into `{:error, reason}` (or, for malformed arguments, an
//! `ArgumentError`) with `?`. The guard resource type is registered by
//! `rustler::init!` with the NIF library's other resources: nothing to call.
//! `native/shmex_example` is this example, built and exercised by the ExUnit
//! suite.
//!
//! ```no_run
//! use rustler::{Env, NifResult, Term};
//! use shmex::{Claim, Handle, Shm};
//!
//! /// Sums the bytes of a `%Shmex{}` struct's data, without copying them.
//! #[rustler::nif(schedule = "DirtyCpu")]
//! fn checksum(shm: Handle) -> NifResult<u64> {
//!     // SAFETY: callers hand this NIF segments nothing else writes to.
//!     let sum = unsafe { shm.data(|data| data.iter().map(|&b| u64::from(b)).sum()) };
//!     Ok(sum?)
//! }
//!
//! /// A new guarded segment holding `len` copies of `byte`, as a `%Shmex{}`.
//! #[rustler::nif]
//! fn filled(env: Env, len: u64, byte: u8) -> NifResult<Term> {
//!     let guard = Shm::allocate(None, Claim::full(len))?;
//!     Shm::of_guard(&guard, Claim::full(0)).write(&vec![byte; len as usize])?;
//!     Ok(shmex::guarded_struct(env, guard, Claim::full(len)))
//! }
//!
//! rustler::init!("Elixir.MyNif");
//! ```
//!
//! The same, without a VM:
//!
//! ```
//! use shmex::{Claim, Shm};
//!
//! let guard = Shm::allocate(None, Claim::full(5))?;
//! let written = Shm::of_guard(&guard, Claim::full(0)).write(b"hello")?;
//! let shm = Shm::of_guard(&guard, written);
//! assert_eq!(shm.read(5)?, b"hello");
//! // SAFETY: nothing else knows this segment.
//! let sum = unsafe { shm.data(|data| data.iter().map(|&b| u32::from(b)).sum::<u32>())? };
//! assert_eq!(sum, 532);
//!
//! // A struct claiming more than its segment has is refused.
//! let forged = Shm::of_guard(&guard, Claim::full(6));
//! assert_eq!(forged.read(6), Err(shmex::Error::InvalidPayload));
//! # Ok::<(), shmex::Error>(())
//! ```
//!
//! # Layers
//!
//! Each module depends only on those listed before it (`.ci/layers` checks):
//! `error`, `name`, `vm` (the VM's primary copy of the crate: finding it,
//! and the table of C functions every other copy calls it through), `cost`,
//! `sys` (OS calls), `io` (pread/pwrite loops),
//! `leftovers` (what a dead process left, and the journal of what a live one
//! guards), `mapping` (the one type with unsafe code on memory, and its SIGBUS
//! handler; the other unsafe code calls across the VM's table, in vm and
//! internal),
//! `segment`, `background`, `budget`, `exclusion` (a segment's turns),
//! `registry` (one entry per segment), `guard`, `schedule`, `shm` (the
//! operations, routed to the primary when it is another copy), `term`,
//! `internal` (with the primary's table of functions).

#![deny(unsafe_op_in_unsafe_fn)]

mod background;
mod budget;
mod cost;
mod error;
mod exclusion;
mod guard;
mod io;
mod leftovers;
mod mapping;
mod name;
mod registry;
mod schedule;
mod segment;
mod shm;
mod sys;
#[cfg(feature = "nif")]
mod term;
mod vm;

#[doc(hidden)]
pub mod internal;

#[cfg(test)]
mod test_support;

pub use error::{Error, Result, Syscall};
pub use guard::Guard;
pub use name::ShmName;
pub use shm::{Claim, Shm};
#[cfg(feature = "nif")]
pub use term::{guarded_struct, ArgumentError, Handle, ShmexTerm};
