// Out-of-line virtual destructors: they anchor each interface's vtable and typeinfo in
// libkiln-sdk.so, so the host and every plugin agree on one copy.
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/model.h"
#include "kiln/sdk/registrar.h"
#include "kiln/sdk/weights.h"

namespace kiln::sdk {

Policy::~Policy() = default;
Model::~Model() = default;
Registrar::~Registrar() = default;
WeightSource::~WeightSource() = default;

} // namespace kiln::sdk
