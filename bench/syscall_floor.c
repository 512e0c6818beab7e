/*
 * The kernel's share of the benchmark's small calls, measured the same
 * way: the system calls Shmex makes for each, and nothing else, in a tight
 * C loop. The benchmark compiles and runs it, and prints its figures as
 * the floor no library can go below on this machine.
 *
 *   allocate+free: openat(O_CREAT|O_EXCL) + ftruncate + fstat (creating a
 *                  segment, and learning which file it is), then, when its
 *                  guard is collected, fstatat + unlinkat (checking the name
 *                  still leads to it, unlinking it) + close
 *   read 64 B:     fstat (the size, and whether the name still leads to the
 *                  segment) + a 64-byte copy out of a mapping
 *   write 64 B:    fstat + a 64-byte copy into a mapping
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void) {
  int dir = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  char name[64];
  struct stat st;
  const int cycles = 20000, copies = 500000;
  double start = now();
  for (int i = 0; i < cycles; i++) {
    snprintf(name, sizeof name, "shmex-floor-%d-%d", getpid(), i);
    int fd = openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 64) != 0 || fstat(fd, &st) != 0) {
      return 1;
    }
    fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW);
    unlinkat(dir, name, 0);
    close(fd);
  }
  printf("allocate+free %.0f\n", (now() - start) / cycles);

  snprintf(name, sizeof name, "shmex-floor-%d", getpid());
  int fd = openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  unlinkat(dir, name, 0);
  if (fd < 0 || ftruncate(fd, 4096) != 0) {
    return 1;
  }
  char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  volatile char buffer[64];
  memset(map, 1, 4096);
  start = now();
  for (int i = 0; i < copies; i++) {
    fstat(fd, &st);
    memcpy((char *)buffer, map, 64);
  }
  printf("read 64 B %.0f\n", (now() - start) / copies);
  start = now();
  for (int i = 0; i < copies; i++) {
    fstat(fd, &st);
    memcpy(map, (char *)buffer, 64);
  }
  printf("write 64 B %.0f\n", (now() - start) / copies);
  return 0;
}
