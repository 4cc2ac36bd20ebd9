// CTorporCUDA declares types only; this file gives SwiftPM a translation unit to build.
#include "CTorporCUDA.h"
