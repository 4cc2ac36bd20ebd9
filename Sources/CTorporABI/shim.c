// libtorpor's C ABI is declared in include/torpor.h and implemented in Swift (Sources/LibTorpor); this target
// carries the header so the Swift side is compiled against the very declarations C callers use.
#include "torpor.h"
