// CTorporDeflate has only a static inline wrapper in its header; this file gives SwiftPM a source to build.
