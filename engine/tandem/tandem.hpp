#pragma once
/// \file
/// Tandem: an embedded, actor-model execution engine for batches on CPU workers and GPUs.
/// This umbrella header brings in the whole host-side API (no CUDA header is included).

#include <tandem/config.hpp>
#include <tandem/engine.hpp>
#include <tandem/error.hpp>
#include <tandem/executor.hpp>
#include <tandem/future.hpp>
#include <tandem/op.hpp>
#include <tandem/promise.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>
