//! `%Shmex{}` terms: decoding them into [`Shm`]s, encoding results and errors.

use std::fmt;

use rustler::{Atom, Encoder, Env, NifException, Resource, ResourceArc, Term};

use crate::error::Error;
use crate::guard::Guard;
use crate::name::ShmName;
use crate::shm::{Claim, Shm};

/// The atoms of `%Shmex{}` terms and their results.
pub mod atoms {
    rustler::atoms! {
        ok,
        error,
        nil,
        __struct__,
        name,
        guard,
        size,
        capacity,
        shmex = "Elixir.Shmex",
    }
}

/// Our guard is a NIF resource; dropping the last reference unlinks the segment.
impl Resource for Guard {}

/// An `ArgumentError` raised in the caller, naming the bad argument.
#[derive(Debug, NifException)]
#[module = "ArgumentError"]
pub struct ArgumentError {
    message: String,
}

impl ArgumentError {
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
        let reason = atom(env, &self.reason());
        match self {
            Error::Os(_, syscall) => (reason, atom(env, syscall.name())).encode(env),
            _ => reason.encode(env),
        }
    }
}

fn atom(env: Env, name: &str) -> Atom {
    // Names come from a fixed set (errno names, error names): no atom leak.
    Atom::from_str(env, name).unwrap_or_else(|_| atoms::error())
}

/// A `%Shmex{}` term, taken apart.
pub struct ShmexTerm<'a> {
    /// `None` for a struct that was never allocated (`name: nil`).
    pub name: Option<ShmName>,
    /// The struct's size and capacity.
    pub claim: Claim,
    /// Our guard, if the `guard` field holds one.
    pub guard: Option<ResourceArc<Guard>>,
    term: Term<'a>,
    name_term: Term<'a>,
    guard_term: Term<'a>,
}

impl<'a> ShmexTerm<'a> {
    /// Decodes a `%Shmex{}` struct passed as the argument called `argument`.
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

    /// The struct as a [`Shm`] to operate on; it must have been allocated.
    pub fn shm(&self, argument: &str) -> Result<Shm<'_>, ArgumentError> {
        let name = self.name.clone().ok_or_else(|| {
            ArgumentError::new(format!(
                "{argument}.name is nil: the struct has no segment, allocate it first"
            ))
        })?;
        Ok(Shm {
            name,
            guard: self.guard.as_deref(),
            claim: self.claim,
            time_limit: None,
        })
    }

    /// The `guard` field, whatever it holds.
    pub fn guard_term(&self) -> Term<'a> {
        self.guard_term
    }

    /// This struct with a new size and capacity; everything else unchanged.
    pub fn with_claim(&self, env: Env<'a>, claim: Claim) -> Term<'a> {
        self.term
            .map_update(atoms::size(), claim.size)
            .and_then(|term| term.map_update(atoms::capacity(), claim.capacity))
            .unwrap_or_else(|_| make_struct(env, self.name_term, self.guard_term, claim))
    }
}

/// A struct for a segment we just guarded.
pub fn guarded_struct<'a>(env: Env<'a>, guard: Guard, claim: Claim) -> Term<'a> {
    let name = binary(env, guard.name().as_bytes());
    make_struct(env, name, ResourceArc::new(guard).encode(env), claim)
}

/// `{:ok, value}`.
pub fn ok<'a>(env: Env<'a>, value: impl Encoder) -> Term<'a> {
    (atoms::ok(), value).encode(env)
}

/// A `%Shmex{}` struct of these fields; `name` is a binary or `nil`.
pub fn struct_term<'a>(
    env: Env<'a>,
    name: Term<'a>,
    guard: Term<'a>,
    claim: Claim,
) -> rustler::NifResult<Term<'a>> {
    let keys = [
        atoms::__struct__().encode(env),
        atoms::name().encode(env),
        atoms::guard().encode(env),
        atoms::size().encode(env),
        atoms::capacity().encode(env),
    ];
    let values = [
        atoms::shmex().encode(env),
        name,
        guard,
        claim.size.encode(env),
        claim.capacity.encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values)
}

/// [`struct_term`], in a NIF: building a map of five distinct atom keys
/// cannot fail, and if it did the panic would become an exception.
fn make_struct<'a>(env: Env<'a>, name: Term<'a>, guard: Term<'a>, claim: Claim) -> Term<'a> {
    struct_term(env, name, guard, claim).expect("five distinct atom keys always make a map")
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    rustler::NewBinary::from_slice(env, bytes).into()
}

fn decode_name(term: Term, argument: &str) -> Result<Option<ShmName>, ArgumentError> {
    if term.decode::<Atom>().ok() == Some(atoms::nil()) {
        return Ok(None);
    }
    let bytes = term
        .decode_as_binary()
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
