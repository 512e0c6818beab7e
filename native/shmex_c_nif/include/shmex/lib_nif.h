/* Shmex 0.5.1's shmex/lib_nif.h: the same as shmex/shmex.h. */
#pragma once

#include "shmex.h"
