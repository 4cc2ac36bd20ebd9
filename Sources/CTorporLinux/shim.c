// CTorporLinux has only static inline wrappers in its header; this file gives SwiftPM a source to build.
