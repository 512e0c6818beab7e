//! POSIX shared memory segments for [Shmex](https://hexdocs.pm/shmex), and the
//! Rust side of `%Shmex{}` terms: what the `Shmex.Native` NIF is made of, and
//! what other Rustler NIFs use to work on `%Shmex{}` structs.
//!
//! - [`ShmexTerm`]: a `%Shmex{}` term, decoded; [`guarded_struct`] makes one.
//! - [`Shm`]: a decoded struct and the operations of `Shmex.Native`, plus
//!   [`Shm::data`] and [`Shm::data_mut`] to work on the data in place.
//! - [`Guard`]: the NIF resource that unlinks a segment when the BEAM collects
//!   it, and keeps the segment open and mapped between calls.
//! - [`Segment`]: an open segment, checked so that touching it cannot raise
//!   SIGBUS (every `unsafe` of the crate lives in its module).
//!
//! # In a NIF
//!
//! A struct's `size` and `capacity` are checked against the real segment
//! before its data is handed out, as `Shmex.Native` does; errors convert into
//! `{:error, reason}` (or, for malformed arguments, an `ArgumentError`) with
//! `?`. The NIF library must register the guard type by calling [`load`]
//! from its `load` callback. `native/shmex_example` is this example, built
//! and exercised by the ExUnit suite.
//!
//! ```no_run
//! use rustler::{Env, NifResult, Term};
//! use shmex::{Claim, Shm, ShmexTerm};
//!
//! /// Sums the bytes of a `%Shmex{}` struct's data, without copying them.
//! #[rustler::nif(schedule = "DirtyCpu")]
//! fn checksum(shm: Term) -> NifResult<u64> {
//!     let shm = ShmexTerm::decode(shm, "shm")?;
//!     Ok(shm.shm("shm")?.data(|data| data.iter().map(|&b| u64::from(b)).sum())?)
//! }
//!
//! /// A new guarded segment holding `len` copies of `byte`, as a `%Shmex{}`.
//! #[rustler::nif]
//! fn filled(env: Env, len: u64, byte: u8) -> NifResult<Term> {
//!     let guard = Shm::allocate(None, Claim::full(len))?;
//!     guard.shm(Claim::full(len)).data_mut(|data| data.fill(byte))?;
//!     Ok(shmex::guarded_struct(env, guard, Claim::full(len)))
//! }
//!
//! fn load(env: Env, _info: Term) -> bool {
//!     shmex::load(env)
//! }
//!
//! rustler::init!("Elixir.MyNif", load = load);
//! ```
//!
//! The same, without a VM:
//!
//! ```
//! use shmex::{Claim, Shm};
//!
//! let guard = Shm::allocate(None, Claim::full(5))?;
//! guard.shm(Claim::full(5)).data_mut(|data| data.copy_from_slice(b"hello"))?;
//! let sum = guard.shm(Claim::full(5)).data(|data| data.iter().map(|&b| u32::from(b)).sum::<u32>())?;
//! assert_eq!(sum, 532);
//!
//! // A struct claiming more than its segment has is refused.
//! let forged = guard.shm(Claim::full(6));
//! assert_eq!(forged.data(|data| data.len()), Err(shmex::Error::InvalidPayload));
//! # Ok::<(), shmex::Error>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]

pub mod budget;
mod cost;
mod error;
mod guard;
pub mod janitor;
mod name;
mod segment;
mod shm;
mod term;

pub use cost::Cost;
pub use error::{Error, Result, Syscall};
pub use guard::Guard;
pub use name::ShmName;
pub use segment::{unlink, unmap, Segment};
pub use shm::{Claim, Shm};
pub use term::{atoms, decode_size, guarded_struct, ok, struct_term, ArgumentError, ShmexTerm};

/// Registers the guard resource type and starts the janitor thread. A NIF
/// library using this crate must call it from its `load` callback.
pub fn load(env: rustler::Env) -> bool {
    janitor::start();
    env.register::<Guard>().is_ok()
}
