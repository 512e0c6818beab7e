//! Model-based test: random sequences of `Shm` operations, each checked
//! against a model in which a segment is a `Vec<u8>` and a struct is a plain
//! value whose claims may be stale or forged.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use shmex::{Claim, Error, Guard, Shm, ShmName};

#[derive(Clone, Debug)]
enum Op {
    Allocate {
        capacity: u64,
        size: u64,
    },
    Write {
        target: Index,
        data: Vec<u8>,
    },
    Read {
        target: Index,
        len: u64,
    },
    SetCapacity {
        target: Index,
        capacity: u64,
    },
    SplitAt {
        target: Index,
        position: u64,
    },
    Append {
        target: Index,
        source: Index,
    },
    Trim {
        target: Index,
        bytes: u64,
    },
    Forge {
        target: Index,
        size: u64,
        capacity: u64,
    },
    Unguard {
        target: Index,
    },
    AddGuard {
        target: Index,
    },
}

fn op() -> impl Strategy<Value = Op> {
    // Small lengths often, so that edges (0, 1, exactly the size) come up.
    let len = || prop_oneof![0..4u64, 0..300u64];
    prop_oneof![
        (len(), len()).prop_map(|(capacity, size)| Op::Allocate { capacity, size }),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(target, data)| Op::Write { target, data }),
        (any::<Index>(), len()).prop_map(|(target, len)| Op::Read { target, len }),
        (any::<Index>(), len()).prop_map(|(target, capacity)| Op::SetCapacity { target, capacity }),
        (any::<Index>(), len()).prop_map(|(target, position)| Op::SplitAt { target, position }),
        (any::<Index>(), any::<Index>()).prop_map(|(target, source)| Op::Append { target, source }),
        (any::<Index>(), len()).prop_map(|(target, bytes)| Op::Trim { target, bytes }),
        (any::<Index>(), len(), len()).prop_map(|(target, size, capacity)| Op::Forge {
            target,
            size,
            capacity
        }),
        any::<Index>().prop_map(|target| Op::Unguard { target }),
        any::<Index>().prop_map(|target| Op::AddGuard { target }),
    ]
}

/// A struct as Elixir would hold it: name, guard (if any), claims.
#[derive(Clone, Debug)]
struct Struct {
    name: ShmName,
    guard: Option<Arc<Guard>>,
    claim: Claim,
}

impl Struct {
    fn shm(&self) -> Shm<'_> {
        Shm::new(&self.name, self.guard.as_deref(), self.claim)
    }

    fn with_claim(&self, claim: Claim) -> Struct {
        Struct {
            claim,
            ..self.clone()
        }
    }
}

#[derive(Default)]
struct World {
    structs: Vec<Struct>,
    /// Guards added to already guarded segments, kept until the test ends.
    extra_guards: Vec<Guard>,
    /// The model: each segment's full contents.
    segments: HashMap<ShmName, Vec<u8>>,
}

impl World {
    fn pick(&self, index: &Index) -> Option<Struct> {
        (!self.structs.is_empty()).then(|| self.structs[index.index(self.structs.len())].clone())
    }

    fn model(&self, shm: &Shm) -> &Vec<u8> {
        &self.segments[shm.name()]
    }

    fn fits(&self, shm: &Shm) -> bool {
        shm.claim().size <= shm.claim().capacity
            && shm.claim().capacity <= self.model(shm).len() as u64
    }

    fn adopt(&mut self, guard: Guard, claim: Claim, contents: Vec<u8>) {
        let name = guard.name().clone();
        self.segments.insert(name.clone(), contents);
        self.structs.push(Struct {
            name,
            guard: Some(Arc::new(guard)),
            claim,
        });
    }
}

fn resized(mut contents: Vec<u8>, len: u64) -> Vec<u8> {
    contents.resize(len as usize, 0);
    contents
}

fn apply(world: &mut World, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Allocate { capacity, size } => {
            let claim = Claim { size, capacity };
            match Shm::allocate(None, claim) {
                Ok(guard) => world.adopt(guard, claim, vec![0; capacity as usize]),
                Err(error) => {
                    prop_assert!(size > capacity);
                    prop_assert_eq!(error, Error::InvalidPayload);
                }
            }
        }
        Op::Write { target, data } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            let capacity = shm.claim().capacity.max(data.len() as u64);
            let mut expected = world.model(&shm).clone();
            if (expected.len() as u64) < capacity {
                expected = resized(expected, capacity);
            }
            expected[..data.len()].copy_from_slice(&data);
            let claim = shm
                .write(&data)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                claim,
                Claim {
                    size: data.len() as u64,
                    capacity
                }
            );
            world.segments.insert(shm.name().clone(), expected);
            world.structs.push(original.with_claim(claim));
        }
        Op::Read { target, len } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            let result = shm.read(len);
            if len > shm.claim().size {
                prop_assert_eq!(result, Err(Error::InvalidReadSize));
            } else if !world.fits(&shm) {
                prop_assert_eq!(result, Err(Error::InvalidPayload));
            } else {
                prop_assert_eq!(result, Ok(world.model(&shm)[..len as usize].to_vec()));
            }
        }
        Op::SetCapacity { target, capacity } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            let result = shm.set_capacity(capacity);
            if !world.fits(&shm) {
                prop_assert_eq!(result, Err(Error::InvalidPayload));
            } else {
                let claim = Claim {
                    size: shm.claim().size.min(capacity),
                    capacity,
                };
                prop_assert_eq!(result, Ok(claim));
                let contents = resized(world.model(&shm).clone(), capacity);
                world.segments.insert(shm.name().clone(), contents);
                world.structs.push(original.with_claim(claim));
            }
        }
        Op::SplitAt { target, position } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            match shm.split_at(position) {
                Ok((left, guard, right)) => {
                    prop_assert!(position <= shm.claim().size && world.fits(&shm));
                    prop_assert_eq!(
                        left,
                        Claim {
                            size: position,
                            ..shm.claim()
                        }
                    );
                    prop_assert_eq!(right, Claim::full(shm.claim().size - position));
                    let tail =
                        world.model(&shm)[position as usize..shm.claim().size as usize].to_vec();
                    world.structs.push(original.with_claim(left));
                    world.adopt(guard, right, tail);
                }
                Err(error) if position > shm.claim().size => {
                    prop_assert_eq!(error, Error::InvalidPosition)
                }
                Err(error) => {
                    prop_assert!(!world.fits(&shm));
                    prop_assert_eq!(error, Error::InvalidPayload);
                }
            }
        }
        Op::Append { target, source } => {
            let (Some(original), Some(source)) = (world.pick(&target), world.pick(&source)) else {
                return Ok(());
            };
            let (shm, source) = (original.shm(), source.shm());
            let result = shm.append(&source);
            if !world.fits(&shm) || !world.fits(&source) {
                prop_assert_eq!(result, Err(Error::InvalidPayload));
            } else {
                let mut contents = world.model(&shm)[..shm.claim().size as usize].to_vec();
                contents.extend_from_slice(&world.model(&source)[..source.claim().size as usize]);
                let claim = Claim::full(contents.len() as u64);
                prop_assert_eq!(result, Ok(claim));
                world.segments.insert(shm.name().clone(), contents);
                world.structs.push(original.with_claim(claim));
            }
        }
        Op::Trim { target, bytes } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            let result = shm.trim(bytes);
            if bytes > shm.claim().size {
                prop_assert_eq!(result, Err(Error::InvalidTrimSize));
            } else if !world.fits(&shm) {
                prop_assert_eq!(result, Err(Error::InvalidPayload));
            } else {
                let contents =
                    world.model(&shm)[bytes as usize..shm.claim().size as usize].to_vec();
                let claim = Claim::full(contents.len() as u64);
                prop_assert_eq!(result, Ok(claim));
                world.segments.insert(shm.name().clone(), contents);
                world.structs.push(original.with_claim(claim));
            }
        }
        Op::Forge {
            target,
            size,
            capacity,
        } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            world
                .structs
                .push(original.with_claim(Claim { size, capacity }));
        }
        Op::Unguard { target } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            world.structs.push(Struct {
                guard: None,
                ..original
            });
        }
        Op::AddGuard { target } => {
            let Some(original) = world.pick(&target) else {
                return Ok(());
            };
            let shm = original.shm();
            match shm.add_guard() {
                // Any existing segment may be guarded, whatever the claims.
                Ok(guard) => {
                    prop_assert!(original.guard.is_none());
                    // The original guard still owns the name; this one must
                    // not unlink it first, so it is kept for the whole test.
                    world.extra_guards.push(guard);
                }
                Err(error) => {
                    prop_assert!(original.guard.is_some());
                    prop_assert_eq!(error, Error::AlreadyGuarded);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut world = World::default();
        for op in ops {
            apply(&mut world, op)?;
        }
        // The segments hold what the model says, whatever the structs claim.
        for (name, contents) in &world.segments {
            let shm = Shm::new(name, None, Claim::full(contents.len() as u64));
            prop_assert_eq!(&shm.read(contents.len() as u64).unwrap(), contents);
        }
    }
}
