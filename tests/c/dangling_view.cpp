// Must NOT compile: a view taken from a temporary result would point into freed memory.
// CMake builds this with -fsyntax-only and expects the compiler to refuse it.
#include <etcdc.hpp>

std::string_view dangling(etcdc::Client& c) { return c.get("k")[0].value(); }
