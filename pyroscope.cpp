#define PYROSCOPE_IMPLEMENTATION
#include "pyroscope.hpp"
