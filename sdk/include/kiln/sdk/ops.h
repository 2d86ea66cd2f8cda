// Every op of the SDK: schemas (argument structs, traits) and the dispatching entry points that
// model code calls (kiln::ops::rms_norm(...), ...). Model code never calls a backend directly.
#pragma once

#include "kiln/sdk/ops/rms_norm.h"
#include "kiln/sdk/ops/rope.h"
