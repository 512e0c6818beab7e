/*
 * Every name of Shmex 0.5.1's C API for NIFs, used the way code written
 * against 0.5.1's headers used them: through <shmex/shmex.h> alone, with
 * what those headers pulled in (errno, math, string and mmap functions).
 * The tests compile it as bundlex compiles natives (-std=c11) with
 * -Werror=implicit-function-declaration, as GCC 14 does by default.
 */
#include <shmex/shmex.h>
#include <stddef.h>

/* The layouts the Rust side asserts (native/shmex_c/src/types.rs and
 * native/shmex_c_nif/src/terms.rs), on 64-bit targets. */
_Static_assert(offsetof(Shmex, name) == 0, "Shmex.name");
_Static_assert(offsetof(Shmex, size) == 8, "Shmex.size");
_Static_assert(offsetof(Shmex, capacity) == 12, "Shmex.capacity");
_Static_assert(offsetof(Shmex, mapped_memory) == 16, "Shmex.mapped_memory");
_Static_assert(offsetof(Shmex, guard) == 24, "Shmex.guard");
_Static_assert(sizeof(Shmex) == 32, "Shmex");
_Static_assert(sizeof(ShmexLibResult) == sizeof(int), "ShmexLibResult");
_Static_assert(SHMEX_ERROR_INVALID_PAYLOAD == 5, "ShmexLibResult values");
_Static_assert(offsetof(ShmexGuard, identity) == 256, "ShmexGuard.identity");
_Static_assert(sizeof(ShmexGuard) == 272, "ShmexGuard");

static ErlNifResourceType *guard_type;

static ERL_NIF_TERM everything(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  PARSE_SHMEX_ARG(0, given);
  Shmex made;
  shmex_init(env, &made, SHMEX_ELIXIR_STRUCT_ENTRIES);
  ShmexLibResult result = shmex_allocate(env, guard_type, &made);
  if (result == SHMEX_RES_OK) {
    result = shmex_open_and_mmap(&made);
  }
  if (result == SHMEX_RES_OK && shmex_mapping_faulted(&made) == 0) {
    memcpy(made.mapped_memory, SHMEX_ELIXIR_STRUCT_ATOM, strlen(SHMEX_ELIXIR_STRUCT_ATOM) % 5);
    shmex_unmap(&made);
    result = shmex_set_capacity(&made, (size_t)ceil(log10(SHMEX_ALLOC_MAX_ATTEMPTS)));
  }
  char name[SHMEX_SHM_NAME_LEN + NAME_MAX];
  shmex_generate_shm_name(name, (int)(SHMEX_SHM_NAME_PREFIX_LEN + SHMEX_SHM_NAME_TIME_ID_LEN));
  Shmex unguarded;
  shmex_init(env, &unguarded, 0);
  unguarded.name = malloc(strlen(name) + 1);
  memcpy(unguarded.name, name, strlen(name) + 1);
  if (shmex_allocate_unguarded(&unguarded) == SHMEX_RES_OK) {
    shmex_add_guard(env, guard_type, &unguarded);
    shmex_unlink(&unguarded);
  }
  int fd = shm_open(name, O_RDONLY, 0);
  void *mapped = mmap(NULL, sizeof(ShmexGuard), PROT_READ, MAP_SHARED, fd, 0);
  if (mapped != MAP_FAILED) {
    munmap(mapped, sizeof(ShmexGuard));
  }
  close(fd);
  shmex_shm_unlink(name);
  shmex_release(&unguarded);
  ERL_NIF_TERM answer = result == SHMEX_RES_OK || result == SHMEX_ERROR_SHM_MAPPED
                            ? shmex_make_term(env, &made)
                            : shmex_make_error_term(env, result);
  const char *names[] = {shmex_lib_result_to_string(SHMEX_ERROR_SHM_OPEN),
                         shmex_lib_result_to_string(SHMEX_ERROR_FTRUNCATE),
                         shmex_lib_result_to_string(SHMEX_ERROR_MMAP),
                         shmex_lib_result_to_string(SHMEX_ERROR_INVALID_PAYLOAD), SHMEX_SHM_NAME_PREFIX};
  (void)names;
  (void)errno;
  shmex_release(&made);
  shmex_release(&given);
  return answer;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  guard_type = enif_open_resource_type(env, NULL, "Guard", shmex_guard_destructor,
                                       ERL_NIF_RT_CREATE, NULL);
  return guard_type == NULL;
}

static ErlNifFunc functions[] = {{"everything", 1, everything, 0}};

ERL_NIF_INIT(Elixir.ApiSurface, functions, load, NULL, NULL, NULL)
