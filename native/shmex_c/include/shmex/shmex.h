/* Shmex's C API for NIFs, as Shmex 0.5.1's shmex/shmex.h: see shmex/lib.h. */
#pragma once

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "lib.h"
