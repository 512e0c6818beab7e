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
    name: Name,
    claim: Claim,
    /// Our guard, borrowed from the term (which holds a reference to it for
    /// as long as the call runs).
    guard: Option<&'a Guard>,
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
        let guard = guard_term.try_get_resource::<Guard>();
        let count =
            |key: Atom, name: &str| decode_size(field(key)?, format_args!("{argument}.{name}"));
        let claim = Claim {
            size: count(atoms::size(), "size")?,
            capacity: count(atoms::capacity(), "capacity")?,
        };
        Ok(ShmexTerm {
            name: decode_name(name_term, argument, guard)?,
            claim,
            guard,
            term,
            name_term,
            guard_term,
        })
    }

    /// The segment's name; `None` for a struct never allocated (`name: nil`).
    pub fn name(&self) -> Option<&ShmName> {
        match &self.name {
            Name::Nil => None,
            Name::Guard => self.guard.map(Guard::name),
            Name::Own(name) => Some(name),
        }
    }

    /// The struct's size and capacity.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Our guard, if the `guard` field holds one.
    pub fn guard(&self) -> Option<&Guard> {
        self.guard
    }

    /// The struct to operate on; it must have been allocated (an
    /// `ArgumentError` naming `argument` otherwise).
    pub fn shm(&self, argument: &str) -> Result<Shm<'_>, ArgumentError> {
        let name = self.name().ok_or_else(|| {
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
        // Only the fields that change are changed: a struct whose claims
        // stay (a write of as many bytes as before) is the same term.
        let changed = |key: Atom, old: u64, new: u64| (old != new).then(|| (key, new.encode(env)));
        let size = changed(atoms::size(), self.claim.size, claim.size);
        let capacity = changed(atoms::capacity(), self.claim.capacity, claim.capacity);
        self.update(size.iter().chain(&capacity))
            .unwrap_or_else(|| struct_term(env, self.name_term, self.guard_term, claim))
    }

    /// This struct with `guard` in its `guard` field, and the guard's name if
    /// it had none; everything else unchanged, extra keys included.
    pub fn with_guard(&self, env: Env<'a>, guard: Guard) -> Term<'a> {
        let name = (self.name().is_none()).then(|| binary(env, &guard.name().posix()));
        let guard = ResourceArc::new(guard).encode(env);
        let mut fields = vec![(atoms::guard(), guard)];
        fields.extend(name.map(|name| (atoms::name(), name)));
        self.update(&fields)
            .unwrap_or_else(|| struct_term(env, name.unwrap_or(self.name_term), guard, self.claim))
    }

    /// The struct with these fields changed; `None` if it is not a map with
    /// them (it always is, as decoded).
    fn update<'f>(&self, fields: impl IntoIterator<Item = &'f (Atom, Term<'a>)>) -> Option<Term<'a>>
    where
        'a: 'f,
    {
        fields
            .into_iter()
            .try_fold(self.term, |term, &(key, value)| {
                term.map_update(key, value).ok()
            })
    }
}

/// A `%Shmex{}` struct as a NIF argument and result: its segment (name, and
/// guard when ours) and its claims, which the operations that change them
/// update. Decoded, it is an allocated struct (else an `ArgumentError`
/// naming `shm`); encoded, it is the struct it came from with its new size
/// and capacity, every other field unchanged.
///
/// ```no_run
/// use rustler::NifResult;
/// use shmex::Handle;
///
/// /// Appends a byte to a struct's data; the struct, updated.
/// #[rustler::nif(schedule = "DirtyCpu")]
/// fn push<'a>(shm: Handle<'a>, byte: u8) -> NifResult<Handle<'a>> {
///     let mut shm = shm;
///     let mut data = shm.read(shm.claim().size)?;
///     data.push(byte);
///     shm.write(&data)?;
///     Ok(shm)
/// }
/// # rustler::init!("Elixir.MyNif");
/// ```
pub struct Handle<'a> {
    term: ShmexTerm<'a>,
    claim: Claim,
}

impl<'a> rustler::Decoder<'a> for Handle<'a> {
    fn decode(term: Term<'a>) -> rustler::NifResult<Handle<'a>> {
        let term = ShmexTerm::decode(term, "shm")?;
        term.shm("shm")?;
        Ok(Handle {
            claim: term.claim(),
            term,
        })
    }
}

impl Encoder for Handle<'_> {
    fn encode<'b>(&self, env: Env<'b>) -> Term<'b> {
        let term = self.term.term;
        self.term.with_claim(term.get_env(), self.claim).in_env(env)
    }
}

impl<'a> Handle<'a> {
    /// The struct's segment and claims, for the operations of [`Shm`].
    pub fn shm(&self) -> Shm<'_> {
        let name = self
            .term
            .name()
            .unwrap_or_else(|| unreachable!("decoded allocated"));
        Shm::new(name, self.term.guard(), self.claim)
    }

    /// The struct's size and capacity, as of its last operation here.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// The first `len` bytes of data: [`Shm::read`].
    pub fn read(&self, len: u64) -> Result<Vec<u8>, Error> {
        self.shm().read(len)
    }

    /// Replaces the data with `data`: [`Shm::write`].
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.claim = self.shm().write(data)?;
        Ok(())
    }

    /// Resizes the segment: [`Shm::set_capacity`].
    pub fn set_capacity(&mut self, capacity: u64) -> Result<(), Error> {
        self.claim = self.shm().set_capacity(capacity)?;
        Ok(())
    }

    /// Appends `source`'s data: [`Shm::append`].
    pub fn append(&mut self, source: &Handle) -> Result<(), Error> {
        self.claim = self.shm().append(&source.shm())?;
        Ok(())
    }

    /// Drops the first `bytes` bytes and shrinks the segment: [`Shm::trim`].
    pub fn trim(&mut self, bytes: u64) -> Result<(), Error> {
        self.claim = self.shm().trim(bytes)?;
        Ok(())
    }

    /// Runs `f` on the data in place: [`Shm::data`].
    ///
    /// # Safety
    ///
    /// As for [`Shm::data`].
    pub unsafe fn data<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error> {
        // SAFETY: forwarded to the caller.
        unsafe { self.shm().data(f) }
    }

    /// Runs `f` on the data in place, to change it: [`Shm::data_mut`].
    ///
    /// # Safety
    ///
    /// As for [`Shm::data_mut`].
    pub unsafe fn data_mut<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, Error> {
        // SAFETY: forwarded to the caller.
        unsafe { self.shm().data_mut(f) }
    }
}

/// A new `%Shmex{}` struct for a segment just guarded.
pub fn guarded_struct(env: Env, guard: Guard, claim: Claim) -> Term {
    let name = binary(env, &guard.name().posix());
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

/// The `name` field of a struct: `nil`, a spelling of the name of our
/// `guard` (the struct's own, mostly: nothing to check or copy), or another
/// name.
enum Name {
    Nil,
    Guard,
    Own(ShmName),
}

fn decode_name(term: Term, argument: &str, guard: Option<&Guard>) -> Result<Name, ArgumentError> {
    let Ok(bytes) = Binary::from_term(term) else {
        if term.decode::<Atom>().ok() == Some(atom::nil()) {
            return Ok(Name::Nil);
        }
        return Err(ArgumentError::new(format!(
            "{argument}.name must be a binary or nil"
        )));
    };
    if guard.is_some_and(|guard| guard.name().is_spelled(bytes.as_slice())) {
        return Ok(Name::Guard);
    }
    ShmName::new(bytes.as_slice())
        .map(Name::Own)
        .ok_or_else(|| ArgumentError::new(format!("{argument}.name contains a NUL byte")))
}

/// Decodes a byte count: a non-negative integer below 2^64. The argument's
/// name is only formatted for an error.
pub fn decode_size(term: Term, argument: impl fmt::Display) -> Result<u64, ArgumentError> {
    term.decode()
        .map_err(|_| ArgumentError::new(format!("{argument} must be a non-negative integer")))
}
