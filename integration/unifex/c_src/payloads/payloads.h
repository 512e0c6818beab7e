#pragma once

#include "_generated/payloads.h"
