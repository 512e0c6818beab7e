//! `%Shmex{}` terms: decoding them into [`Shm`]s, encoding results and
//! errors, and the guard as a NIF resource.
//!
//! Owns the meeting point with the VM's terms; the operations are
//! [`crate::shm`]'s.

use std::fmt;

use rustler::types::atom;
use rustler::{Atom, Binary, Encoder, Env, NifException, NifStruct, Resource, ResourceArc, Term};

use crate::error::Error;
use crate::guard::Guard;
use crate::name::ShmName;
use crate::shm::{Claim, Shm};

mod atoms {
    rustler::atoms! { __struct__, name, guard, size, capacity, shmex = "Elixir.Shmex" }
}

/// Our guard is a NIF resource, registered by every NIF library that links
/// this crate when it loads; dropping the last reference unlinks the segment.
#[rustler::resource_impl]
impl Resource for Guard {}

/// An `ArgumentError` raised in the caller, naming the bad argument.
#[derive(Debug, NifException)]
#[module = "ArgumentError"]
pub struct ArgumentError {
    message: String,
}

impl ArgumentError {
    /// An `ArgumentError` with this message.
    pub fn new(message: impl Into<String>) -> ArgumentError {
        ArgumentError {
            message: message.into(),
        }
    }
}

impl From<ArgumentError> for rustler::Error {
    fn from(error: ArgumentError) -> rustler::Error {
        rustler::Error::RaiseTerm(Box::new(error))
    }
}

/// Errors return `{:error, reason}` from a NIF.
impl From<Error> for rustler::Error {
    fn from(error: Error) -> rustler::Error {
        rustler::Error::Term(Box::new(error))
    }
}

/// The `reason` of `{:error, reason}`: `{posix, syscall}` for OS errors, an
/// atom otherwise.
impl Encoder for Error {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let reason = reason_atom(env, &self.reason());
        match self {
            Error::Os(_, syscall) => (reason, reason_atom(env, syscall.name())).encode(env),
            _ => reason.encode(env),
        }
    }
}

fn reason_atom(env: Env, name: &str) -> Atom {
    // Names come from a fixed set (errno names, error names): no atom leak.
    Atom::from_str(env, name).unwrap_or_else(|_| atom::error())
}

/// A `%Shmex{}` struct with exactly its four fields, as made anew.
#[derive(NifStruct)]
#[module = "Shmex"]
struct ShmexStruct<'a> {
    name: Term<'a>,
    guard: Term<'a>,
    size: u64,
    capacity: u64,
}

/// A `%Shmex{}` term, taken apart.
pub struct ShmexTerm<'a> {
    name: Option<ShmName>,
    claim: Claim,
    guard: Option<ResourceArc<Guard>>,
    term: Term<'a>,
    name_term: Term<'a>,
    guard_term: Term<'a>,
}

impl<'a> ShmexTerm<'a> {
    /// Decodes a `%Shmex{}` struct passed as the argument called `argument`;
    /// malformed ones are an `ArgumentError` naming it.
    ///
    /// The `guard` field may hold anything (`nil`, our guard, another
    /// library's resource): it is kept as it is and only recognized when ours.
    pub fn decode(term: Term<'a>, argument: &str) -> Result<ShmexTerm<'a>, ArgumentError> {
        let not_a_struct = || ArgumentError::new(format!("{argument} is not a %Shmex{{}} struct"));
        let field = |key: Atom| term.map_get(key).map_err(|_| not_a_struct());

        if field(atoms::__struct__())?.decode::<Atom>().ok() != Some(atoms::shmex()) {
            return Err(not_a_struct());
        }
        let name_term = field(atoms::name())?;
        let guard_term = field(atoms::guard())?;
        let count =
            |key: Atom, name: &str| decode_size(field(key)?, format_args!("{argument}.{name}"));
        let claim = Claim {
            size: count(atoms::size(), "size")?,
            capacity: count(atoms::capacity(), "capacity")?,
        };
        Ok(ShmexTerm {
            name: decode_name(name_term, argument)?,
            claim,
            guard: guard_term.decode().ok(),
            term,
            name_term,
            guard_term,
        })
    }

    /// The segment's name; `None` for a struct never allocated (`name: nil`).
    pub fn name(&self) -> Option<&ShmName> {
        self.name.as_ref()
    }

    /// The struct's size and capacity.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Our guard, if the `guard` field holds one.
    pub fn guard(&self) -> Option<&Guard> {
        self.guard.as_deref()
    }

    /// The struct to operate on; it must have been allocated (an
    /// `ArgumentError` naming `argument` otherwise).
    pub fn shm(&self, argument: &str) -> Result<Shm<'_>, ArgumentError> {
        let name = self.name.as_ref().ok_or_else(|| {
            ArgumentError::new(format!(
                "{argument}.name is nil: the struct has no segment, allocate it first"
            ))
        })?;
        let shm = Shm::new(name, self.guard(), self.claim);
        let foreign = self.guard.is_none() && self.guard_term.is_ref();
        Ok(if foreign {
            shm.with_foreign_guard()
        } else {
            shm
        })
    }

    /// The `name` field, as the struct spells it.
    pub fn name_term(&self) -> Term<'a> {
        self.name_term
    }

    /// The `guard` field, whatever it holds.
    pub fn guard_term(&self) -> Term<'a> {
        self.guard_term
    }

    /// This struct with a new size and capacity; everything else unchanged,
    /// extra keys included.
    pub fn with_claim(&self, env: Env<'a>, claim: Claim) -> Term<'a> {
        let fields = [
            (atoms::size(), claim.size.encode(env)),
            (atoms::capacity(), claim.capacity.encode(env)),
        ];
        self.update(&fields)
            .unwrap_or_else(|| struct_term(env, self.name_term, self.guard_term, claim))
    }

    /// This struct with `guard` in its `guard` field, and the guard's name if
    /// it had none; everything else unchanged, extra keys included.
    pub fn with_guard(&self, env: Env<'a>, guard: Guard) -> Term<'a> {
        let name = (self.name.is_none()).then(|| binary(env, &guard.name().to_posix()));
        let guard = ResourceArc::new(guard).encode(env);
        let mut fields = vec![(atoms::guard(), guard)];
        fields.extend(name.map(|name| (atoms::name(), name)));
        self.update(&fields)
            .unwrap_or_else(|| struct_term(env, name.unwrap_or(self.name_term), guard, self.claim))
    }

    /// The struct with these fields changed; `None` if it is not a map with
    /// them (it always is, as decoded).
    fn update(&self, fields: &[(Atom, Term<'a>)]) -> Option<Term<'a>> {
        fields.iter().try_fold(self.term, |term, &(key, value)| {
            term.map_update(key, value).ok()
        })
    }
}

/// A new `%Shmex{}` struct for a segment just guarded.
pub fn guarded_struct(env: Env, guard: Guard, claim: Claim) -> Term {
    let name = binary(env, &guard.name().to_posix());
    struct_term(env, name, ResourceArc::new(guard).encode(env), claim)
}

/// A new `%Shmex{}` struct of these fields; `name` is a binary or `nil`.
pub fn struct_term<'a>(env: Env<'a>, name: Term<'a>, guard: Term<'a>, claim: Claim) -> Term<'a> {
    ShmexStruct {
        name,
        guard,
        size: claim.size,
        capacity: claim.capacity,
    }
    .encode(env)
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    rustler::NewBinary::from_slice(env, bytes).into()
}

fn decode_name(term: Term, argument: &str) -> Result<Option<ShmName>, ArgumentError> {
    if term.decode::<Atom>().ok() == Some(atom::nil()) {
        return Ok(None);
    }
    let bytes = Binary::from_term(term)
        .map_err(|_| ArgumentError::new(format!("{argument}.name must be a binary or nil")))?;
    ShmName::new(bytes.as_slice())
        .map(Some)
        .ok_or_else(|| ArgumentError::new(format!("{argument}.name contains a NUL byte")))
}

/// Decodes a byte count: a non-negative integer below 2^64. The argument's
/// name is only formatted for an error.
pub fn decode_size(term: Term, argument: impl fmt::Display) -> Result<u64, ArgumentError> {
    term.decode()
        .map_err(|_| ArgumentError::new(format!("{argument} must be a non-negative integer")))
}
